"""The write path: one batch of MQTT messages into the database, in one transaction.

Readings go through psycopg's binary COPY into per-connection staging tables, then
`INSERT ... SELECT ... ON CONFLICT DO NOTHING`, so re-deliveries and re-sends are
absorbed by the unique keys. In the same transaction the batch maintains the latest
state per device (late readings never overwrite a newer one), the daily and hourly
aggregates the API reads, device liveness, auto-registration, dead letters and the
per-minute ingest counters. The collector and dead-letter replay both use it.

A refusal of the data is not an outage. When the database refuses a batch (a data
exception, an integrity or a program-limit error: `is_refusal`), the batch is split in
halves under savepoints until the refused messages stand alone; each becomes a dead
letter `unstorable` with the database's error as its detail and the rest is stored in
the same transaction. One refused message costs about 2·log2(batch) extra attempts.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import assert_never

import msgspec
import psycopg
from psycopg import sql

from cityvitals.db.schema import LAG_BOUNDS_S
from cityvitals.payloads import (
    DeviceStatus,
    EnergyPayload,
    Event,
    Limits,
    Message,
    ParkingPayload,
    Reading,
    WastePayload,
    parse_message,
    printable,
)
from cityvitals.reasons import Reason, Rejection
from cityvitals.timeutil import utcnow
from cityvitals.topics import Kind


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as it came off the broker."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass
class BatchResult:
    """What a batch did; `received == stored + duplicates + rejected`."""

    received: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejected: Counter[Reason] = field(default_factory=Counter)
    autoregistered: int = 0
    # Attempts the database refused while isolating unstorable messages.
    refusals: int = 0

    def add(self, other: BatchResult) -> None:
        """Fold another result into this one."""
        self.received += other.received
        self.stored.update(other.stored)
        self.duplicates.update(other.duplicates)
        self.rejected.update(other.rejected)
        self.autoregistered += other.autoregistered
        self.refusals += other.refusals


# SQLSTATE classes in which the database refuses the data itself (PostgreSQL appendix
# A): 22 data exception (a value it cannot store), 23 integrity constraint violation,
# 54 program limit exceeded (a row or key too large). Retrying the same data can never
# succeed; anything else (a lost connection, a shutdown, a conflict) can.
REFUSAL_CLASSES = ("22", "23", "54")


def is_refusal(err: BaseException) -> bool:
    """Whether a database error refuses the data rather than reporting a fault."""
    if not isinstance(err, psycopg.Error) or not err.sqlstate:
        return False
    return err.sqlstate[:2] in REFUSAL_CLASSES


def refusal_detail(err: psycopg.Error) -> str:
    """The database's error as a dead letter's detail."""
    diag = err.diag
    text = diag.message_primary or str(err).strip() or type(err).__name__
    if diag.message_detail:
        text = f"{text} ({diag.message_detail})"
    return printable(f"database refused it: {err.sqlstate} {text}")[:1000]


# Staging tables: one per kind, created once per connection, emptied at each commit.
_STAGE_COLUMNS: dict[Kind, tuple[tuple[str, str], ...]] = {
    Kind.PARKING: (
        ("device_id", "text"),
        ("ts", "timestamptz"),
        ("received_at", "timestamptz"),
        ("ts_from_broker", "bool"),
        ("seq", "int8"),
        ("occupied", "bool"),
        ("battery_v", "float8"),
        ("rssi_dbm", "float8"),
    ),
    Kind.WASTE: (
        ("device_id", "text"),
        ("ts", "timestamptz"),
        ("received_at", "timestamptz"),
        ("ts_from_broker", "bool"),
        ("seq", "int8"),
        ("bins", "text"),
        ("fill_max", "float8"),
        ("fill_mean", "float8"),
        ("h2s_ppm", "float8"),
        ("nh3_ppm", "float8"),
        ("ch4_pct_lel", "float8"),
        ("temp_c", "float8"),
        ("seepage", "bool"),
        ("door_open", "bool"),
        ("battery_v", "float8"),
    ),
    Kind.ENERGY: (
        ("device_id", "text"),
        ("ts", "timestamptz"),
        ("received_at", "timestamptz"),
        ("ts_from_broker", "bool"),
        ("seq", "int8"),
        ("active_power_kw", "float8"),
        ("energy_kwh", "float8"),
        ("voltage_v", "float8"),
        ("power_factor", "float8"),
        ("adjustable_kw", "float8"),
    ),
}
_BIN_ENCODER = msgspec.json.Encoder()


def _row(r: Reading) -> tuple[object, ...]:
    head = (r.device_id, r.ts, r.received_at, r.ts_from_broker, r.seq)
    p = r.payload
    match p:
        case ParkingPayload():
            return (*head, p.occupied, p.battery_v, p.rssi_dbm)
        case WastePayload():
            fills = [b.fill_pct for b in p.bins]
            gas = p.gas
            return (
                *head,
                _BIN_ENCODER.encode(p.bins).decode(),
                max(fills),
                sum(fills) / len(fills),
                gas.h2s_ppm if gas else None,
                gas.nh3_ppm if gas else None,
                gas.ch4_pct_lel if gas else None,
                p.temp_c,
                p.seepage,
                p.door_open,
                p.battery_v,
            )
        case EnergyPayload():
            return (
                *head,
                p.active_power_kw,
                p.energy_kwh,
                p.voltage_v,
                p.power_factor,
                p.adjustable_kw,
            )
        case _:
            assert_never(p)


def _stage_name(kind: Kind) -> str:
    return f"stage_{kind.value}"


def _fresh_name(kind: Kind) -> str:
    return f"fresh_{kind.value}"


def _ensure_staging(conn: psycopg.Connection) -> None:
    for kind, cols in _STAGE_COLUMNS.items():
        # What came in, as written by COPY.
        conn.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(_stage_name(kind)),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in cols
                ),
            )
        )
        # What of it was new: the rows the unique key let through.
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(sql.Identifier(_fresh_name(kind)), sql.Identifier(f"readings_{kind.value}"))
        )


# Empties the staging tables between the parts of a batch being isolated; a commit
# empties them otherwise (ON COMMIT DELETE ROWS).
_CLEAR_STAGING = "; ".join(
    f"DELETE FROM {name(kind)}" for kind in Kind for name in (_stage_name, _fresh_name)
)


def _cols(kind: Kind) -> list[str]:
    return [c for c, _ in _STAGE_COLUMNS[kind]]


def _insert_fresh(kind: Kind) -> sql.Composed:
    cols = _cols(kind)
    select = [sql.SQL("bins::jsonb") if c == "bins" else sql.Identifier(c) for c in cols]
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    return sql.SQL(
        "WITH ins AS (INSERT INTO {table} ({cols}) SELECT {select} FROM {stage} "
        "ON CONFLICT (device_id, ts) DO NOTHING RETURNING {cols}) "
        "INSERT INTO {fresh} ({cols}) SELECT {cols} FROM ins"
    ).format(
        table=sql.Identifier(f"readings_{kind.value}"),
        cols=col_list,
        select=sql.SQL(", ").join(select),
        stage=sql.Identifier(_stage_name(kind)),
        fresh=sql.Identifier(_fresh_name(kind)),
    )


def _upsert_latest(kind: Kind) -> sql.Composed:
    # Only a newer reading replaces the latest state: late readings are stored in
    # history but never move a device's current state backwards.
    cols = _cols(kind)
    table = sql.Identifier(f"latest_{kind.value}")
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    return sql.SQL(
        "INSERT INTO {table} ({cols}) "
        "SELECT DISTINCT ON (device_id) {cols} FROM {fresh} ORDER BY device_id, ts DESC "
        "ON CONFLICT (device_id) DO UPDATE SET {sets} WHERE {table}.ts < excluded.ts"
    ).format(
        table=table,
        cols=col_list,
        fresh=sql.Identifier(_fresh_name(kind)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
            for c in cols
            if c != "device_id"
        ),
    )


# Each device's new readings in time order, preceded by its previous latest state (row
# locked, so two collectors never chain from the same state). Late readings, older than
# the previous state, are stored but take no part in the chain.
_CHAIN = """
WITH prev AS (
    SELECT {prev_cols} FROM {latest}
    WHERE device_id IN (SELECT DISTINCT device_id FROM {fresh})
    ORDER BY device_id FOR UPDATE
), chain AS (
    SELECT {prev_cols}, false AS is_new FROM prev
    UNION ALL
    SELECT {fresh_cols}, true FROM {fresh} f LEFT JOIN prev p USING (device_id)
    WHERE p.ts IS NULL OR f.ts > p.ts
), steps AS (
    SELECT *, lag(ts) OVER w AS prev_ts, {lags}
    FROM chain WINDOW w AS (PARTITION BY device_id ORDER BY ts)
)
"""
# What the aggregate statement answers: whether the batch holds a late reading (older
# than its device's previous latest state), for which the touched days are recomputed.
_ANY_LATE = """
SELECT EXISTS (SELECT 1 FROM {fresh} f JOIN prev p USING (device_id) WHERE f.ts < p.ts)
"""
_LOCAL_DAY = "((ts AT TIME ZONE %(tz)s)::date)"
# A meter register falling below this fraction of its previous value was reset.
METER_RESET_BELOW = 0.5
_SAME_DAY = f"(prev_ts IS NOT NULL AND (prev_ts AT TIME ZONE %(tz)s)::date = {_LOCAL_DAY})"

_AGGREGATE: dict[Kind, str] = {
    # Energy: the in-day increase of the cumulative register. A drop below half of the
    # previous value is a meter reset (or a new meter), after which the new value is
    # what was used since; a smaller decrease is a corrected or glitched reading and
    # counts nothing (counting it as a reset would add the whole register, millions of
    # kWh, to today's figure).
    Kind.ENERGY: _CHAIN.format(
        prev_cols="device_id, ts, energy_kwh",
        latest="latest_energy",
        fresh="fresh_energy",
        fresh_cols="f.device_id, f.ts, f.energy_kwh",
        lags="lag(energy_kwh) OVER w AS prev_kwh",
    )
    + f"""
, aggregate AS (
INSERT INTO energy_daily AS e (device_id, day, consumption_kwh, last_ts)
SELECT device_id, {_LOCAL_DAY}, coalesce(sum(CASE
        WHEN {_SAME_DAY} AND energy_kwh IS NOT NULL AND prev_kwh IS NOT NULL THEN
            CASE WHEN energy_kwh >= prev_kwh THEN energy_kwh - prev_kwh
                 WHEN energy_kwh < prev_kwh * {METER_RESET_BELOW} THEN energy_kwh
                 ELSE 0 END
        END), 0), max(ts)
FROM steps WHERE is_new GROUP BY 1, 2
ON CONFLICT (device_id, day) DO UPDATE SET
    consumption_kwh = e.consumption_kwh + excluded.consumption_kwh,
    last_ts = GREATEST(e.last_ts, excluded.last_ts)
)
"""
    + _ANY_LATE.format(fresh="fresh_energy"),
    # Waste: positive weight increases per bin (its position in the array) within the
    # local day, when the bin kept its category.
    # Each bin (its position in the array) against the same position of the device's
    # reading just before, when both are of the same local day and category.
    Kind.WASTE: _CHAIN.format(
        prev_cols="device_id, ts, bins",
        latest="latest_waste",
        fresh="fresh_waste",
        fresh_cols="f.device_id, f.ts, f.bins",
        lags="lag(bins) OVER w AS prev_bins",
    )
    + """
, per_bin AS (
    SELECT s.device_id, s.ts, s.prev_ts, b.bin->>'category' AS category,
           (b.bin->>'weight_kg')::float8 AS kg,
           (s.prev_bins -> (b.idx::int - 1))->>'category' AS prev_cat,
           ((s.prev_bins -> (b.idx::int - 1))->>'weight_kg')::float8 AS prev_kg
    FROM steps s CROSS JOIN LATERAL jsonb_array_elements(s.bins) WITH ORDINALITY AS b(bin, idx)
    WHERE s.is_new
), aggregate AS (
INSERT INTO waste_daily AS w (device_id, day, category, deposited_kg)
SELECT device_id, """
    + _LOCAL_DAY
    + """, category, sum(kg - prev_kg)
FROM per_bin
WHERE """
    + _SAME_DAY
    + """ AND prev_cat = category AND kg > prev_kg
GROUP BY 1, 2, 3
ON CONFLICT (device_id, day, category) DO UPDATE SET
    deposited_kg = w.deposited_kg + excluded.deposited_kg
)
"""
    + _ANY_LATE.format(fresh="fresh_waste"),
    # Parking: free -> occupied transitions, per UTC hour.
    Kind.PARKING: _CHAIN.format(
        prev_cols="device_id, ts, occupied",
        latest="latest_parking",
        fresh="fresh_parking",
        fresh_cols="f.device_id, f.ts, f.occupied",
        lags="lag(occupied) OVER w AS prev_occupied",
    )
    + """
, aggregate AS (
INSERT INTO parking_hourly AS p (device_id, hour, transitions)
SELECT device_id, date_trunc('hour', ts, 'UTC'), count(*)
FROM steps WHERE is_new AND prev_occupied = false AND occupied
GROUP BY 1, 2
ON CONFLICT (device_id, hour) DO UPDATE SET transitions = p.transitions + excluded.transitions
)
"""
    + _ANY_LATE.format(fresh="fresh_parking"),
}

# Late readings (older than the device's latest state) count as if they had arrived in
# order: the device-days (energy, waste) and device-hours (parking) they touch are
# recomputed from the stored history, which already holds this batch's rows. Runs
# before the latest state moves on, and only when the batch has a late reading.
# `cityvitals rebuild` runs the same statements over every device-day and -hour.
_LATE = (
    "SELECT f.device_id, f.ts FROM {fresh} f JOIN {latest} l USING (device_id) WHERE f.ts < l.ts"
)
_DAY_OF = "((ts AT TIME ZONE %(tz)s)::date)"
_IN_DAY = (
    "r.device_id = d.device_id AND r.ts >= (d.day::timestamp AT TIME ZONE %(tz)s) "
    "AND r.ts < ((d.day + 1)::timestamp AT TIME ZONE %(tz)s)"
)
_RECOMPUTE_ENERGY_DAYS = f"""
WITH d AS ({{days}}),
steps AS (
    SELECT r.device_id, d.day, r.ts, r.energy_kwh,
           lag(r.energy_kwh) OVER (PARTITION BY r.device_id, d.day ORDER BY r.ts) AS prev_kwh
    FROM d JOIN readings_energy r ON {_IN_DAY}
)
INSERT INTO energy_daily AS e (device_id, day, consumption_kwh, last_ts)
SELECT device_id, day, coalesce(sum(CASE
        WHEN energy_kwh IS NOT NULL AND prev_kwh IS NOT NULL THEN
            CASE WHEN energy_kwh >= prev_kwh THEN energy_kwh - prev_kwh
                 WHEN energy_kwh < prev_kwh * {METER_RESET_BELOW} THEN energy_kwh
                 ELSE 0 END
        END), 0), max(ts)
FROM steps GROUP BY 1, 2
ON CONFLICT (device_id, day) DO UPDATE SET
    consumption_kwh = excluded.consumption_kwh, last_ts = excluded.last_ts
"""
_DELETE_WASTE_DAYS = """
DELETE FROM waste_daily w USING ({days}) d WHERE w.device_id = d.device_id AND w.day = d.day
"""
_RECOMPUTE_WASTE_DAYS = f"""
WITH d AS ({{days}}),
steps AS (
    SELECT r.device_id, d.day, r.bins,
           lag(r.bins) OVER (PARTITION BY r.device_id, d.day ORDER BY r.ts) AS prev_bins
    FROM d JOIN readings_waste r ON {_IN_DAY}
), per_bin AS (
    SELECT s.device_id, s.day, b.bin->>'category' AS category,
           (b.bin->>'weight_kg')::float8 AS kg,
           (s.prev_bins -> (b.idx::int - 1))->>'category' AS prev_cat,
           ((s.prev_bins -> (b.idx::int - 1))->>'weight_kg')::float8 AS prev_kg
    FROM steps s CROSS JOIN LATERAL jsonb_array_elements(s.bins) WITH ORDINALITY AS b(bin, idx)
)
INSERT INTO waste_daily (device_id, day, category, deposited_kg)
SELECT device_id, day, category, sum(kg - prev_kg) FROM per_bin
WHERE prev_cat = category AND kg > prev_kg GROUP BY 1, 2, 3
"""
# Free -> occupied transitions of the given device-hours, each against the reading
# just before it (which may lie in the hour before).
_RECOMPUTE_PARKING_HOURS = """
WITH h AS ({hours})
INSERT INTO parking_hourly AS p (device_id, hour, transitions)
SELECT h.device_id, h.hour, count(*) FILTER (WHERE r.occupied AND prev.occupied = false)
FROM h
JOIN readings_parking r ON r.device_id = h.device_id
    AND r.ts >= h.hour AND r.ts < h.hour + INTERVAL '1 hour'
LEFT JOIN LATERAL (
    SELECT q.occupied FROM readings_parking q WHERE q.device_id = r.device_id AND q.ts < r.ts
    ORDER BY q.ts DESC LIMIT 1
) prev ON true
GROUP BY 1, 2
ON CONFLICT (device_id, hour) DO UPDATE SET transitions = excluded.transitions
"""
_LATE_DAYS = {
    kind: f"SELECT DISTINCT device_id, {_DAY_OF} AS day FROM ("
    + _LATE.format(fresh=f"fresh_{kind.value}", latest=f"latest_{kind.value}")
    + ") late"
    for kind in (Kind.ENERGY, Kind.WASTE)
}
# A late parking reading changes the transition at its own time and the one at the
# next reading after it: both hours are counted again.
_LATE_HOURS = f"""
SELECT device_id, date_trunc('hour', ts, 'UTC') AS hour FROM ({
    _LATE.format(fresh="fresh_parking", latest="latest_parking")
}) late
UNION
SELECT late.device_id, date_trunc('hour', n.ts, 'UTC') FROM ({
    _LATE.format(fresh="fresh_parking", latest="latest_parking")
}) late
CROSS JOIN LATERAL (
    SELECT r.ts FROM readings_parking r WHERE r.device_id = late.device_id AND r.ts > late.ts
    ORDER BY r.ts LIMIT 1
) n
"""
_RECOMPUTE_LATE: dict[Kind, tuple[str, ...]] = {
    Kind.ENERGY: (_RECOMPUTE_ENERGY_DAYS.format(days=_LATE_DAYS[Kind.ENERGY]),),
    Kind.WASTE: (
        _DELETE_WASTE_DAYS.format(days=_LATE_DAYS[Kind.WASTE]),
        _RECOMPUTE_WASTE_DAYS.format(days=_LATE_DAYS[Kind.WASTE]),
    ),
    Kind.PARKING: (_RECOMPUTE_PARKING_HOURS.format(hours=_LATE_HOURS),),
}

_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
_SEQ = """
INSERT INTO seq_10m AS s (device_id, bucket, min_seq, max_seq, n)
SELECT device_id, date_bin('10 minutes', ts, {epoch}), min(seq), max(seq), count(*)
FROM {fresh} WHERE seq IS NOT NULL GROUP BY 1, 2
ON CONFLICT (device_id, bucket) DO UPDATE SET
    min_seq = LEAST(s.min_seq, excluded.min_seq),
    max_seq = GREATEST(s.max_seq, excluded.max_seq), n = s.n + excluded.n
"""
_LAGS = """
SELECT width_bucket(extract(epoch FROM %(now)s - ts)::float8, %(bounds)s::float8[]), count(*)
FROM {fresh} GROUP BY 1
"""
# Every device that spoke: its liveness, and registration as `unassigned` if unknown.
# A message's age counts from its `ts` (the receive time where it had none), so a
# backlog of old readings delivered now does not make a device look current.
# Only a device heard for the first time (its `device_state` row inserted, not
# updated: `xmax = 0`) can be unknown to the registry, so only those are looked up
# there; removing a device from the registry removes its `device_state` row too
# (`cityvitals.registry.service.delete_device`). The ON CONFLICT settles a race with
# another writer registering the same device.
_SEEN = """
WITH seen AS (
    INSERT INTO device_state AS d (device_id, kind, last_seen_at)
    SELECT device_id, %(kind)s, max(ts) FROM {stage} GROUP BY device_id
    ORDER BY device_id
    ON CONFLICT (device_id) DO UPDATE SET
        last_seen_at = GREATEST(d.last_seen_at, excluded.last_seen_at)
    RETURNING d.device_id, (d.xmax = 0) AS first_heard
)
INSERT INTO devices (device_id, kind, auto_registered)
SELECT s.device_id, %(kind)s, true FROM seen s
WHERE s.first_heard AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = s.device_id)
ON CONFLICT (device_id) DO NOTHING
"""


def _per_kind(template: str, kind: Kind) -> str:
    return template.format(fresh=_fresh_name(kind), stage=_stage_name(kind), epoch=_EPOCH)


_INSERT_FRESH = {kind: _insert_fresh(kind) for kind in Kind}
_UPSERT_LATEST = {kind: _upsert_latest(kind) for kind in Kind}


class BatchWriter:
    """Writes batches of messages; one instance per process, any number of connections."""

    def __init__(self, *, prefix: str, limits: Limits, local_tz: str, collector: str) -> None:
        self.prefix = prefix
        self.limits = limits
        self.local_tz = local_tz
        self.collector = collector
        self._staged: set[int] = set()

    def parse_one(self, m: Incoming) -> Message | Rejection:
        """Parse one message (pure: it may run where the message is received)."""
        return parse_message(
            m.topic, m.payload, m.received_at, prefix=self.prefix, limits=self.limits
        )

    def parse(
        self,
        batch: Iterable[Incoming],
        parsed: Iterable[Message | Rejection | None] | None = None,
    ) -> tuple[list[Message], list[Incoming], list[tuple[Incoming, Rejection]]]:
        """Parse a batch into valid messages, what each came from, and rejections;
        `parsed` holds what `parse_one` already made of each (None: not parsed yet)."""
        messages: list[Message] = []
        sources: list[Incoming] = []
        rejections: list[tuple[Incoming, Rejection]] = []
        done = parsed if parsed is not None else itertools.repeat(None)
        for m, result in zip(batch, done, strict=parsed is not None):
            if result is None:
                result = self.parse_one(m)
            if isinstance(result, Rejection):
                rejections.append((m, result))
            else:
                messages.append(result)
                sources.append(m)
        return messages, sources, rejections

    def write(
        self,
        conn: psycopg.Connection,
        batch: Sequence[Incoming],
        parsed: Sequence[Message | Rejection | None] | None = None,
    ) -> BatchResult:
        """Parse and store a batch in one transaction, and commit it; `parsed` as for
        `parse`.

        A `psycopg.errors.DeadlockDetected` means another writer locked the same
        devices in another order; nothing was stored and the batch can be retried.
        """
        messages, sources, rejections = self.parse(batch, parsed)
        try:
            result = self.store_parsed(conn, messages, rejections, sources=sources)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return result

    def store_parsed(
        self,
        conn: psycopg.Connection,
        messages: Sequence[Message],
        rejections: Sequence[tuple[Incoming, Rejection]] = (),
        *,
        dead_letter: bool = True,
        sources: Sequence[Incoming] | None = None,
    ) -> BatchResult:
        """Store parsed messages and dead-letter rejections; the caller commits.

        Messages the database refuses are counted in `rejected` as `unstorable` while
        the rest is stored, and dead-lettered with their `sources` (what each message
        came from) when `dead_letter`; only faults (outage, conflict) raise.
        """
        if dead_letter and messages and (sources is None or len(sources) != len(messages)):
            raise ValueError("dead-lettering refused messages needs the source of each")
        pid = conn.info.backend_pid
        if pid not in self._staged:
            _ensure_staging(conn)
            self._staged.add(pid)
        paired: list[tuple[Incoming | None, Message]] = list(
            zip(sources if sources is not None else [None] * len(messages), messages, strict=True)
        )
        try:
            return self._store(conn, paired, rejections, dead_letter=dead_letter)
        except BaseException:
            # A failed transaction may have lost the staging tables with its session;
            # make sure the next attempt creates them again.
            self._staged.discard(pid)
            raise

    def _store(
        self,
        conn: psycopg.Connection,
        messages: Sequence[tuple[Incoming | None, Message]],
        rejections: Sequence[tuple[Incoming, Rejection]],
        *,
        dead_letter: bool,
    ) -> BatchResult:
        now = utcnow()
        result = BatchResult(received=len(messages) + len(rejections))
        lag_counts = [0] * (len(LAG_BOUNDS_S) + 1)
        refused: list[tuple[Incoming | None, Rejection]] = []
        if messages:
            self._store_isolating(conn, messages, result, lag_counts, now, refused)
        rejected = [*rejections, *refused]
        if dead_letter and rejected:
            self._dead_letters(conn, [(m, r) for m, r in rejected if m is not None])
        for _, rej in rejected:
            result.rejected[rej.reason] += 1
        self._ingest_counters(conn, result, lag_counts, now)
        return result

    def _store_isolating(
        self,
        conn: psycopg.Connection,
        messages: Sequence[tuple[Incoming | None, Message]],
        result: BatchResult,
        lag_counts: list[int],
        now: datetime,
        refused: list[tuple[Incoming | None, Rejection]],
        *,
        isolating: bool = False,
    ) -> None:
        """Store messages under a savepoint; on a refusal, split until it stands alone."""
        part = BatchResult()
        part_lags = [0] * len(lag_counts)
        try:
            with conn.transaction():
                self._store_messages(conn, [m for _, m in messages], part, part_lags, now)
        except Exception as err:
            # A database error that is not a refusal is a fault (outage, conflict): the
            # caller retries the whole batch. Any other exception is a message this code
            # cannot store: isolated like a refusal, so it can never stall the stream.
            if isinstance(err, psycopg.Error) and not is_refusal(err):
                raise
            result.refusals += 1
            if len(messages) == 1:
                detail = (
                    refusal_detail(err)
                    if isinstance(err, psycopg.Error)
                    else printable(f"could not be stored: {type(err).__name__}: {err}")[:1000]
                )
                refused.append((messages[0][0], Rejection(Reason.UNSTORABLE, detail)))
                return
            half = len(messages) // 2
            for piece in (messages[:half], messages[half:]):
                self._store_isolating(conn, piece, result, lag_counts, now, refused, isolating=True)
            return
        if isolating:
            # The next part must not see this part's rows in the staging tables.
            conn.execute(_CLEAR_STAGING)
        result.add(part)
        for i, n in enumerate(part_lags):
            lag_counts[i] += n

    def _store_messages(
        self,
        conn: psycopg.Connection,
        messages: Sequence[Message],
        result: BatchResult,
        lag_counts: list[int],
        now: datetime,
    ) -> None:
        readings: dict[Kind, list[Reading]] = defaultdict(list)
        events: list[Event] = []
        statuses: list[DeviceStatus] = []
        # Devices heard through events and status messages; readings are handled in SQL.
        seen: dict[str, tuple[str, datetime]] = {}
        for msg in messages:
            if isinstance(msg, Reading):
                readings[msg.kind].append(msg)
                continue
            if isinstance(msg, Event):
                events.append(msg)
            else:
                statuses.append(msg)
            when = msg.ts if isinstance(msg, Event) else msg.received_at
            prev = seen.get(msg.device_id)
            if prev is None or when > prev[1]:
                seen[msg.device_id] = (msg.kind.value, when)

        for kind in sorted(readings):
            self._store_readings(conn, kind, readings[kind], result, lag_counts, now)
        self._store_events(conn, events, result)
        result.stored["status"] += len(statuses)
        self._device_state(conn, seen, statuses)
        result.autoregistered += self._autoregister_other(conn, seen)

    def _store_readings(
        self,
        conn: psycopg.Connection,
        kind: Kind,
        rows: list[Reading],
        result: BatchResult,
        lag_counts: list[int],
        now: datetime,
    ) -> None:
        cols = _STAGE_COLUMNS[kind]
        with conn.cursor() as cur:
            with cur.copy(
                sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(_stage_name(kind))
                )
            ) as copy:
                copy.set_types([t for _, t in cols])
                for r in rows:
                    copy.write_row(_row(r))
            cur.execute(_INSERT_FRESH[kind])
            fresh = cur.rowcount
            result.stored[kind.value] += fresh
            result.duplicates[kind.value] += len(rows) - fresh
            params = {
                "kind": kind.value,
                "tz": self.local_tz,
                "now": now,
                "bounds": list(LAG_BOUNDS_S),
            }
            cur.execute(_per_kind(_SEEN, kind), params)
            result.autoregistered += max(cur.rowcount, 0)
            if not fresh:
                return
            cur.execute(_per_kind(_LAGS, kind), params)
            for bucket, count in cur.fetchall():
                lag_counts[min(int(bucket), len(lag_counts) - 1)] += int(count)
            cur.execute(_per_kind(_SEQ, kind))
            late = cur.execute(_AGGREGATE[kind], params).fetchone()
            if late and late[0]:
                for statement in _RECOMPUTE_LATE[kind]:
                    cur.execute(statement, params)
            cur.execute(_UPSERT_LATEST[kind])

    def _store_events(
        self, conn: psycopg.Connection, events: list[Event], result: BatchResult
    ) -> None:
        if not events:
            return
        rows = conn.execute(
            "INSERT INTO events (device_id, event_id, kind, type, ts, received_at, "
            "ts_from_broker, attrs) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::timestamptz[], %s::timestamptz[], %s::bool[], %s::jsonb[]) "
            "ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id",
            (
                [e.device_id for e in events],
                [e.event_id for e in events],
                [e.kind.value for e in events],
                [e.type for e in events],
                [e.ts for e in events],
                [e.received_at for e in events],
                [e.ts_from_broker for e in events],
                [_BIN_ENCODER.encode(e.attrs).decode() for e in events],
            ),
        ).fetchall()
        inserted = {(d, i) for d, i in rows}
        seqs: list[tuple[str, datetime, int]] = []
        for e in events:
            key = (e.device_id, e.event_id)
            if key in inserted:
                inserted.discard(key)
                result.stored["event"] += 1
                seq = e.attrs.get("seq")
                if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63:
                    seqs.append((e.device_id, e.ts, seq))
            else:
                result.duplicates["event"] += 1
        self._seq_events(conn, seqs)

    def _device_state(
        self,
        conn: psycopg.Connection,
        seen: dict[str, tuple[str, datetime]],
        statuses: list[DeviceStatus],
    ) -> None:
        if not seen:
            return
        newest_status: dict[str, DeviceStatus] = {}
        for s in statuses:
            cur = newest_status.get(s.device_id)
            if cur is None or s.received_at >= cur.received_at:
                newest_status[s.device_id] = s
        ids = sorted(seen)
        conn.execute(
            "INSERT INTO device_state AS d (device_id, kind, last_seen_at, status_online, "
            "status_at) SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], "
            "%s::bool[], %s::timestamptz[]) "
            "ON CONFLICT (device_id) DO UPDATE SET "
            "last_seen_at = GREATEST(d.last_seen_at, excluded.last_seen_at), "
            "status_online = CASE WHEN excluded.status_at IS NOT NULL AND "
            "(d.status_at IS NULL OR excluded.status_at >= d.status_at) "
            "THEN excluded.status_online ELSE d.status_online END, "
            "status_at = CASE WHEN excluded.status_at IS NOT NULL AND "
            "(d.status_at IS NULL OR excluded.status_at >= d.status_at) "
            "THEN excluded.status_at ELSE d.status_at END",
            (
                ids,
                [seen[d][0] for d in ids],
                [seen[d][1] for d in ids],
                [newest_status[d].online if d in newest_status else None for d in ids],
                [newest_status[d].received_at if d in newest_status else None for d in ids],
            ),
        )

    def _seq_events(self, conn: psycopg.Connection, seqs: list[tuple[str, datetime, int]]) -> None:
        if not seqs:
            return
        conn.execute(
            "INSERT INTO seq_10m AS s (device_id, bucket, min_seq, max_seq, n) "
            f"SELECT d, date_bin('10 minutes', t, {_EPOCH}), min(q), max(q), count(*) "
            "FROM unnest(%s::text[], %s::timestamptz[], %s::int8[]) AS u(d, t, q) "
            "GROUP BY 1, 2 ON CONFLICT (device_id, bucket) DO UPDATE SET "
            "min_seq = LEAST(s.min_seq, excluded.min_seq), "
            "max_seq = GREATEST(s.max_seq, excluded.max_seq), n = s.n + excluded.n",
            ([d for d, _, _ in seqs], [t for _, t, _ in seqs], [q for _, _, q in seqs]),
        )

    def _autoregister_other(
        self, conn: psycopg.Connection, seen: dict[str, tuple[str, datetime]]
    ) -> int:
        if not seen:
            return 0
        ids = sorted(seen)
        cur = conn.execute(
            "INSERT INTO devices (device_id, kind, auto_registered) "
            "SELECT d, k, true FROM unnest(%s::text[], %s::text[]) AS t(d, k) "
            "ON CONFLICT (device_id) DO NOTHING",
            (ids, [seen[d][0] for d in ids]),
        )
        return max(cur.rowcount, 0)

    def _dead_letters(
        self, conn: psycopg.Connection, rejections: Sequence[tuple[Incoming, Rejection]]
    ) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY dead_letters (topic, payload, reason, detail, received_at, collector) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "bytea", "text", "text", "timestamptz", "text"])
            for m, rej in rejections:
                # Text the database cannot hold (U+0000) is spelled out: a dead letter
                # itself is never refused.
                copy.write_row(
                    (
                        printable(m.topic),
                        m.payload,
                        rej.reason.value,
                        printable(rej.detail),
                        m.received_at,
                        self.collector,
                    )
                )

    def _ingest_counters(
        self, conn: psycopg.Connection, result: BatchResult, counts: list[int], now: datetime
    ) -> None:
        conn.execute(
            "INSERT INTO ingest_minutely AS m (minute, collector, received, stored, duplicates, "
            "rejected, lag_counts) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (minute, collector) DO UPDATE SET "
            "received = m.received + excluded.received, stored = m.stored + excluded.stored, "
            "duplicates = m.duplicates + excluded.duplicates, "
            "rejected = m.rejected + excluded.rejected, "
            "lag_counts = ARRAY(SELECT a + b FROM unnest(m.lag_counts, excluded.lag_counts) "
            "AS t(a, b))",
            (
                now.replace(second=0, microsecond=0),
                self.collector,
                result.received,
                sum(result.stored.values()),
                sum(result.duplicates.values()),
                sum(result.rejected.values()),
                counts,
            ),
        )


def limits_from(max_payload_bytes: int, clock_skew_s: float, too_old_s: float) -> Limits:
    """Validation limits from settings values."""
    return Limits(
        max_payload_bytes=max_payload_bytes,
        clock_skew=timedelta(seconds=clock_skew_s),
        too_old=timedelta(seconds=too_old_s),
    )
