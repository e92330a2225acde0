"""`cityvitals rebuild`: every table the write path maintains, recomputed from history.

The collector keeps the latest state per device, liveness, the daily energy and waste
figures, the hourly parking transitions and the 10-minute sequence counts up to date
batch by batch (cityvitals.store). After a fix to one of those formulas, or after a
restore of raw readings, an operator recomputes them here from the stored readings and
events, with the same statements the write path uses for late readings. The suite
holds the two to each other: what batches maintained equals what this rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from cityvitals.changes import log_everything
from cityvitals.store import (
    _DAY_OF,
    _DELETE_WASTE_DAYS,
    _EPOCH,
    _RECOMPUTE_ENERGY_DAYS,
    _RECOMPUTE_PARKING_HOURS,
    _RECOMPUTE_WASTE_DAYS,
    _STAGE_COLUMNS,
)
from cityvitals.topics import Kind

# Only one rebuild at a time, and never beside itself half-done ("CVRB").
_REBUILD_LOCK_KEY = 0x43_56_52_42
_ALL_DAYS = {
    kind: f"SELECT DISTINCT device_id, {_DAY_OF} AS day FROM readings_{kind.value}"
    for kind in (Kind.ENERGY, Kind.WASTE)
}
_ALL_HOURS = (
    "SELECT DISTINCT device_id, date_trunc('hour', ts, 'UTC') AS hour FROM readings_parking"
)
_SEQ = f"""
INSERT INTO seq_10m (device_id, bucket, min_seq, max_seq, n)
SELECT device_id, date_bin('10 minutes', ts, {_EPOCH}), min(seq), max(seq), count(*)
FROM (
    SELECT device_id, ts, seq FROM readings_parking WHERE seq IS NOT NULL
    UNION ALL SELECT device_id, ts, seq FROM readings_waste WHERE seq IS NOT NULL
    UNION ALL SELECT device_id, ts, seq FROM readings_energy WHERE seq IS NOT NULL
    UNION ALL SELECT device_id, ts, (attrs->>'seq')::numeric::int8 FROM events
        WHERE jsonb_typeof(attrs->'seq') = 'number' AND attrs->>'seq' ~ '^[0-9]{{1,19}}$'
          AND (attrs->>'seq')::numeric < 9223372036854775808
) s GROUP BY 1, 2
"""
# Liveness from the newest message by `ts`; a status message leaves only its own time.
_LAST_SEEN = """
UPDATE device_state d SET last_seen_at = GREATEST(m.ts, d.status_at)
FROM (
    SELECT device_id, max(ts) AS ts FROM (
        SELECT device_id, ts FROM latest_parking
        UNION ALL SELECT device_id, ts FROM latest_waste
        UNION ALL SELECT device_id, ts FROM latest_energy
        UNION ALL SELECT device_id, max(ts) FROM events GROUP BY device_id
    ) t GROUP BY device_id
) m WHERE m.device_id = d.device_id
"""


def _latest(kind: Kind) -> str:
    cols = ", ".join(c for c, _ in _STAGE_COLUMNS[kind])
    return (
        f"INSERT INTO latest_{kind.value} ({cols}) "
        f"SELECT DISTINCT ON (device_id) {cols} FROM readings_{kind.value} "
        "ORDER BY device_id, ts DESC"
    )


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """Rows written per table."""

    rows: dict[str, int]


def rebuild(conn: psycopg.Connection, *, local_tz: str) -> RebuildReport:
    """Recompute the maintained tables in one transaction, and commit."""
    params = {"tz": local_tz}
    rows: dict[str, int] = {}
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REBUILD_LOCK_KEY,))
        # Writers lock the latest state of the devices they write; holding every
        # table's lock keeps the collectors waiting (not failing) while this runs.
        conn.execute(
            "LOCK TABLE latest_parking, latest_waste, latest_energy, energy_daily, "
            "waste_daily, parking_hourly, seq_10m IN EXCLUSIVE MODE"
        )
        for kind in Kind:
            conn.execute(f"DELETE FROM latest_{kind.value}")
            rows[f"latest_{kind.value}"] = conn.execute(_latest(kind)).rowcount
        conn.execute("DELETE FROM energy_daily")
        rows["energy_daily"] = conn.execute(
            _RECOMPUTE_ENERGY_DAYS.format(days=_ALL_DAYS[Kind.ENERGY]), params
        ).rowcount
        conn.execute(_DELETE_WASTE_DAYS.format(days=_ALL_DAYS[Kind.WASTE]), params)
        rows["waste_daily"] = conn.execute(
            _RECOMPUTE_WASTE_DAYS.format(days=_ALL_DAYS[Kind.WASTE]), params
        ).rowcount
        conn.execute("DELETE FROM parking_hourly")
        rows["parking_hourly"] = conn.execute(
            _RECOMPUTE_PARKING_HOURS.format(hours=_ALL_HOURS)
        ).rowcount
        conn.execute("DELETE FROM seq_10m")
        rows["seq_10m"] = conn.execute(_SEQ).rowcount
        rows["device_state"] = conn.execute(_LAST_SEEN).rowcount
        # Every device's state may differ now: the API reloads its city state.
        log_everything(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return RebuildReport(rows=rows)
