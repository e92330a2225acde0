"""Dead-letter replay: re-validate rejected messages and store what now passes.

Each dead letter is parsed again with its original topic, bytes and receive time (so
`too_old` and `clock_skew` judge it as they did on arrival) and, when it passes, is
stored through `cityvitals.store` exactly as the collector stores messages, in a
transaction of its own that also marks the dead letter `replayed_at` and
`replay_result` (`stored`, `duplicate`, or the reason it is still rejected). Dead
letters are never deleted: the history of what was rejected stays. The API's
`POST /v1/dead-letters/replay` and `cityvitals dead-letters replay` both run this.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import datetime

import orjson
import psycopg
import structlog
from psycopg import sql
from pydantic import BaseModel, Field

from cityvitals import logs
from cityvitals.payloads import parse_message
from cityvitals.reasons import Reason, Rejection
from cityvitals.settings import LimitSettings
from cityvitals.startup import NOT_MIGRATED, StartupError, database_error
from cityvitals.store import BatchWriter, limits_from
from cityvitals.timeutil import utcnow

log = structlog.get_logger("cityvitals.replay")
# Replay writes its ingest counters under this collector name, so that re-stored old
# messages do not count as ingest lag or as fresh traffic.
REPLAY_COLLECTOR = "dead-letter-replay"
# Ids fetched per round trip; each dead letter is then replayed in its own transaction.
ID_CHUNK = 1000
_NOT_STORED = sql.SQL("(replay_result IS NULL OR replay_result NOT IN ('stored', 'duplicate'))")
_NEXT_IDS = sql.SQL(
    "SELECT id FROM dead_letters WHERE id > %(after)s AND {not_stored} "
    "AND (%(reason)s::text IS NULL OR reason = %(reason)s) ORDER BY id LIMIT %(limit)s"
).format(not_stored=_NOT_STORED)
_LOCK_ONE = sql.SQL(
    "SELECT topic, payload, received_at FROM dead_letters WHERE id = %(id)s "
    "AND {not_stored} FOR UPDATE SKIP LOCKED"
).format(not_stored=_NOT_STORED)
_MARK = sql.SQL(
    "UPDATE dead_letters SET replayed_at = %(now)s, replay_result = %(outcome)s WHERE id = %(id)s"
)


class ReplayReport(BaseModel):
    """What a replay did."""

    replayed: int
    stored: int
    duplicate: int
    rejected: dict[str, int] = Field(description="still rejected, per reason")


def replay_sync(
    settings: LimitSettings, *, reason: Reason | str | None, limit: int, now: datetime
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
            params = {"after": last_id, "reason": reason_value, "limit": ID_CHUNK}
            ids = [row[0] for row in conn.execute(_NEXT_IDS, params).fetchall()]
            conn.commit()
            if not ids:
                break
            for dl_id in ids:
                last_id = dl_id
                if sum(outcomes.values()) >= limit:
                    break
                outcome = _replay_one(conn, writer, dl_id, settings.topic_prefix, now)
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
    now: datetime,
) -> str | None:
    try:
        row = conn.execute(_LOCK_ONE, {"id": dl_id}).fetchone()
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
            if result.rejected:
                # The database still refuses it (`unstorable`): it stays a dead letter,
                # replayable again after the next fix.
                outcome = next(iter(result.rejected)).value
            elif sum(result.stored.values()):
                outcome = "stored"
            else:
                outcome = "duplicate"
        conn.execute(_MARK, {"now": now, "outcome": outcome, "id": dl_id})
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcome


async def replay(
    settings: LimitSettings, *, reason: Reason | None, limit: int, now: datetime
) -> ReplayReport:
    """`replay_sync` off the event loop (the store's write path is synchronous)."""
    return await asyncio.to_thread(replay_sync, settings, reason=reason, limit=limit, now=now)


def replay_cli(*, reason: str | None, limit: int) -> int:
    """`cityvitals dead-letters replay`: 0 on success, 2 for an unknown reason.

    A database that cannot be reached raises StartupError (the command's one line).
    """
    if reason is not None and reason not in {r.value for r in Reason}:
        raise StartupError(
            f"unknown reason {reason!r}", f"use one of: {', '.join(r.value for r in Reason)}"
        )
    settings = LimitSettings()
    # Logs go to stderr: stdout is the report.
    logs.configure(settings.log_level, settings.log_format)
    try:
        report = replay_sync(settings, reason=reason, limit=limit, now=utcnow())
    except psycopg.errors.UndefinedTable:
        raise NOT_MIGRATED from None
    except psycopg.OperationalError as err:
        raise database_error(err, settings.psycopg_dsn) from None
    sys.stdout.write(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
