"""Dead-letter replay: re-validate rejected messages and store what now passes.

Each dead letter is parsed again with its original topic, bytes and receive time (so
`too_old` and `clock_skew` judge it as they did on arrival) and, when it passes, is
stored through `cityvitals.store` exactly as the collector stores messages, in a
transaction of its own that also marks the dead letter `replayed_at` and
`replay_result` (`stored`, `duplicate`, or the reason it is still rejected). Dead
letters are never deleted: the history of what was rejected stays.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import datetime

import orjson
import psycopg
import structlog

from cityvitals.api.models import ReplayReport
from cityvitals.api.queries import REPLAY_COLLECTOR
from cityvitals.payloads import parse_message
from cityvitals.reasons import Reason, Rejection
from cityvitals.settings import ApiSettings
from cityvitals.store import BatchWriter, limits_from
from cityvitals.timeutil import utcnow

log = structlog.get_logger("cityvitals.api.replay")
# Ids fetched per round trip; each dead letter is then replayed in its own transaction.
ID_CHUNK = 1000
_NEXT_IDS = (
    "SELECT id FROM dead_letters WHERE id > %s "
    "AND (replay_result IS NULL OR replay_result NOT IN ('stored', 'duplicate')) "
    "AND (%s::text IS NULL OR reason = %s) ORDER BY id LIMIT %s"
)
_LOCK_ONE = (
    "SELECT topic, payload, received_at FROM dead_letters WHERE id = %s "
    "AND (replay_result IS NULL OR replay_result NOT IN ('stored', 'duplicate')) "
    "FOR UPDATE SKIP LOCKED"
)


def replay_sync(
    settings: ApiSettings, *, reason: Reason | str | None, limit: int, now: datetime
) -> ReplayReport:
    """Replay up to `limit` dead letters not yet stored, oldest first."""
    limits = limits_from(settings.max_payload_bytes, settings.clock_skew_s, settings.too_old_s)
    writer = BatchWriter(
        prefix=settings.topic_prefix,
        limits=limits,
        local_tz=settings.local_tz,
        collector=REPLAY_COLLECTOR,
    )
    reason_value = reason.value if isinstance(reason, Reason) else reason
    outcomes: Counter[str] = Counter()
    last_id = 0
    with psycopg.connect(settings.psycopg_dsn) as conn:
        while sum(outcomes.values()) < limit:
            ids = [
                row[0]
                for row in conn.execute(
                    _NEXT_IDS,
                    (last_id, reason_value, reason_value, ID_CHUNK),
                ).fetchall()
            ]
            conn.commit()
            if not ids:
                break
            for dl_id in ids:
                last_id = dl_id
                if sum(outcomes.values()) >= limit:
                    break
                outcome = _replay_one(conn, writer, dl_id, settings.topic_prefix, limits, now)
                if outcome is not None:
                    outcomes[outcome] += 1
    rejected = {k: v for k, v in outcomes.items() if k not in ("stored", "duplicate")}
    report = ReplayReport(
        replayed=sum(outcomes.values()),
        stored=outcomes["stored"],
        duplicate=outcomes["duplicate"],
        rejected=rejected,
    )
    log.info("dead letters replayed", **report.model_dump())
    return report


def _replay_one(
    conn: psycopg.Connection,
    writer: BatchWriter,
    dl_id: int,
    prefix: str,
    limits: object,
    now: datetime,
) -> str | None:
    try:
        row = conn.execute(
            _LOCK_ONE,
            (dl_id,),
        ).fetchone()
        if row is None:
            conn.rollback()  # replayed meanwhile by someone else
            return None
        topic, payload, received_at = row
        parsed = parse_message(
            topic, bytes(payload), received_at, prefix=prefix, limits=writer.limits
        )
        if isinstance(parsed, Rejection):
            outcome = parsed.reason.value
        else:
            result = writer.store_parsed(conn, [parsed], dead_letter=False)
            outcome = "stored" if sum(result.stored.values()) else "duplicate"
        conn.execute(
            "UPDATE dead_letters SET replayed_at = %s, replay_result = %s WHERE id = %s",
            (now, outcome, dl_id),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcome


async def replay(
    settings: ApiSettings, *, reason: Reason | None, limit: int, now: datetime
) -> ReplayReport:
    """`replay_sync` off the event loop (the store's write path is synchronous)."""
    return await asyncio.to_thread(replay_sync, settings, reason=reason, limit=limit, now=now)


def replay_cli(*, reason: str | None, limit: int) -> int:
    """`cityvitals dead-letters replay`: 0 on success, 2 for an unknown reason or no DB."""
    if reason is not None and reason not in {r.value for r in Reason}:
        sys.stderr.write(
            f"unknown reason {reason!r}; one of: {', '.join(r.value for r in Reason)}\n"
        )
        return 2
    settings = ApiSettings()
    try:
        report = replay_sync(settings, reason=reason, limit=limit, now=utcnow())
    except psycopg.OperationalError as err:
        sys.stderr.write(f"database unavailable: {err}\n")
        return 2
    sys.stdout.write(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
