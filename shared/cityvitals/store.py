"""The write path: one batch of MQTT messages into the database, in one transaction.

Readings go through psycopg's binary COPY into per-connection staging tables, then
`INSERT ... SELECT ... ON CONFLICT DO NOTHING`, so re-deliveries and re-sends are
absorbed by the unique keys. In the same transaction the batch maintains the latest
state per device (late readings never overwrite a newer one), the daily and hourly
aggregates the API reads, device liveness, auto-registration, dead letters and the
per-minute ingest counters. The collector and dead-letter replay both use it.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import msgspec
import psycopg
from psycopg import sql

from cityvitals.db.schema import LAG_BOUNDS_S
from cityvitals.payloads import (
    EnergyPayload,
    Event,
    Limits,
    Message,
    ParkingPayload,
    Reading,
    Status,
    WastePayload,
    parse_message,
)
from cityvitals.reasons import Reason, Rejection
from cityvitals.timeutil import local_day, utcnow
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
    # Per stored reading: (device_id, kind), for callers that track devices.
    lag_s: list[float] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        """Fold another result into this one."""
        self.received += other.received
        self.stored.update(other.stored)
        self.duplicates.update(other.duplicates)
        self.rejected.update(other.rejected)
        self.autoregistered += other.autoregistered
        self.lag_s.extend(other.lag_s)


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
    if isinstance(p, ParkingPayload):
        return (*head, p.occupied, p.battery_v, p.rssi_dbm)
    if isinstance(p, WastePayload):
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
    return (*head, p.active_power_kw, p.energy_kwh, p.voltage_v, p.power_factor, p.adjustable_kw)


def _stage_name(kind: Kind) -> str:
    return f"stage_{kind.value}"


def _ensure_staging(conn: psycopg.Connection) -> None:
    for kind, cols in _STAGE_COLUMNS.items():
        conn.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(_stage_name(kind)),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in cols
                ),
            )
        )


def _insert_select(kind: Kind) -> sql.Composed:
    cols = [c for c, _ in _STAGE_COLUMNS[kind]]
    select = [sql.SQL("bins::jsonb") if c == "bins" else sql.Identifier(c) for c in cols]
    return sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {select} FROM {stage} "
        "ON CONFLICT (device_id, ts) DO NOTHING RETURNING device_id, ts"
    ).format(
        table=sql.Identifier(f"readings_{kind.value}"),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        select=sql.SQL(", ").join(select),
        stage=sql.Identifier(_stage_name(kind)),
    )


def _upsert_latest(kind: Kind) -> sql.Composed:
    # Only a newer reading replaces the latest state: late readings are stored in
    # history but never move a device's current state backwards.
    cols = [c for c, _ in _STAGE_COLUMNS[kind]]
    select = [sql.SQL("bins::jsonb") if c == "bins" else sql.Identifier(c) for c in cols]
    table = sql.Identifier(f"latest_{kind.value}")
    return sql.SQL(
        "INSERT INTO {table} ({cols}) "
        "SELECT DISTINCT ON (device_id) {select} FROM {stage} ORDER BY device_id, ts DESC "
        "ON CONFLICT (device_id) DO UPDATE SET {sets} WHERE {table}.ts < excluded.ts"
    ).format(
        table=table,
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        select=sql.SQL(", ").join(select),
        stage=sql.Identifier(_stage_name(kind)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
            for c in cols
            if c != "device_id"
        ),
    )


_INSERT_SELECT = {kind: _insert_select(kind) for kind in Kind}
_UPSERT_LATEST = {kind: _upsert_latest(kind) for kind in Kind}
_PREVIOUS = {
    Kind.PARKING: "SELECT device_id, ts, occupied FROM latest_parking "
    "WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
    Kind.WASTE: "SELECT device_id, ts, bins FROM latest_waste "
    "WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
    Kind.ENERGY: "SELECT device_id, ts, energy_kwh FROM latest_energy "
    "WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
}


def _bucket(ts: datetime, minutes: int) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % minutes, second=0, microsecond=0)


@dataclass
class _Aggregates:
    energy: defaultdict[tuple[str, date], list[object]] = field(
        default_factory=lambda: defaultdict(lambda: [0.0, None])
    )
    waste: defaultdict[tuple[str, date, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    parking: defaultdict[tuple[str, datetime], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    seq: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)

    def add_seq(self, device_id: str, ts: datetime, seq: int | None) -> None:
        if seq is None:
            return
        key = (device_id, _bucket(ts, 10))
        cur = self.seq.get(key)
        if cur is None:
            self.seq[key] = [seq, seq, 1]
        else:
            cur[0] = min(cur[0], seq)
            cur[1] = max(cur[1], seq)
            cur[2] += 1


class BatchWriter:
    """Writes batches of messages; one instance per process, any number of connections."""

    def __init__(self, *, prefix: str, limits: Limits, local_tz: str, collector: str) -> None:
        self.prefix = prefix
        self.limits = limits
        self.local_tz = local_tz
        self.collector = collector
        self._staged: set[int] = set()

    def parse(
        self, batch: Iterable[Incoming]
    ) -> tuple[list[Message], list[tuple[Incoming, Rejection]]]:
        """Parse a batch into valid messages and rejections."""
        messages: list[Message] = []
        rejections: list[tuple[Incoming, Rejection]] = []
        for m in batch:
            parsed = parse_message(
                m.topic, m.payload, m.received_at, prefix=self.prefix, limits=self.limits
            )
            if isinstance(parsed, Rejection):
                rejections.append((m, parsed))
            else:
                messages.append(parsed)
        return messages, rejections

    def write(self, conn: psycopg.Connection, batch: Sequence[Incoming]) -> BatchResult:
        """Parse and store a batch in one transaction, and commit it."""
        messages, rejections = self.parse(batch)
        try:
            result = self.store_parsed(conn, messages, rejections)
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
    ) -> BatchResult:
        """Store parsed messages and dead-letter rejections; the caller commits."""
        pid = conn.info.backend_pid
        if pid not in self._staged:
            _ensure_staging(conn)
            self._staged.add(pid)
        try:
            return self._store(conn, messages, rejections, dead_letter=dead_letter)
        except BaseException:
            # A failed transaction may have lost the staging tables with its session;
            # make sure the next attempt creates them again.
            self._staged.discard(pid)
            raise

    def _store(
        self,
        conn: psycopg.Connection,
        messages: Sequence[Message],
        rejections: Sequence[tuple[Incoming, Rejection]],
        *,
        dead_letter: bool,
    ) -> BatchResult:
        now = utcnow()
        result = BatchResult(received=len(messages) + len(rejections))
        readings: dict[Kind, list[Reading]] = defaultdict(list)
        events: list[Event] = []
        statuses: list[Status] = []
        seen: dict[str, tuple[str, datetime]] = {}
        for msg in messages:
            if isinstance(msg, Reading):
                readings[msg.kind].append(msg)
            elif isinstance(msg, Event):
                events.append(msg)
            else:
                statuses.append(msg)
            prev = seen.get(msg.device_id)
            if prev is None or msg.received_at > prev[1]:
                seen[msg.device_id] = (msg.kind.value, msg.received_at)

        agg = _Aggregates()
        for kind, rows in readings.items():
            self._store_readings(conn, kind, rows, result, agg, now)
        self._store_events(conn, events, result, agg)
        if statuses:
            result.stored["status"] += len(statuses)
        self._device_state(conn, seen, statuses)
        self._write_aggregates(conn, agg)
        if seen:
            result.autoregistered = self._autoregister(conn, seen)
        if dead_letter and rejections:
            self._dead_letters(conn, rejections)
        for _, rej in rejections:
            result.rejected[rej.reason] += 1
        self._ingest_counters(conn, result, now)
        return result

    def _store_readings(
        self,
        conn: psycopg.Connection,
        kind: Kind,
        rows: list[Reading],
        result: BatchResult,
        agg: _Aggregates,
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
            cur.execute(_INSERT_SELECT[kind])
            inserted = {(d, ts) for d, ts in cur.fetchall()}
        fresh: list[Reading] = []
        for r in rows:
            key = (r.device_id, r.ts)
            if key in inserted:
                inserted.discard(key)
                fresh.append(r)
                result.lag_s.append((now - r.ts).total_seconds())
            else:
                result.duplicates[kind.value] += 1
        result.stored[kind.value] += len(fresh)
        if not fresh:
            return
        for r in fresh:
            agg.add_seq(r.device_id, r.ts, r.seq)
        self._chain(conn, kind, fresh, agg)
        conn.execute(_UPSERT_LATEST[kind])

    def _chain(
        self, conn: psycopg.Connection, kind: Kind, fresh: list[Reading], agg: _Aggregates
    ) -> None:
        """Walk each device's new readings in time order from its previous latest state."""
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for r in fresh:
            by_device[r.device_id].append(r)
        prev: dict[str, tuple[datetime, object]] = {
            d: (ts, v)
            for d, ts, v in conn.execute(_PREVIOUS[kind], (sorted(by_device),)).fetchall()
        }
        tz = self.local_tz
        for device_id, rs in by_device.items():
            rs.sort(key=lambda r: r.ts)
            state = prev.get(device_id)
            cur_ts: datetime | None = state[0] if state else None
            cur_val: object = state[1] if state else None
            for r in rs:
                if cur_ts is not None and r.ts <= cur_ts:
                    continue  # late: stored, but not part of the forward chain
                p = r.payload
                same_day = cur_ts is not None and local_day(cur_ts, tz) == local_day(r.ts, tz)
                if isinstance(p, EnergyPayload):
                    day = local_day(r.ts, tz)
                    entry = agg.energy[(device_id, day)]
                    if same_day and p.energy_kwh is not None and isinstance(cur_val, float):
                        # A decrease is a meter reset: the new value is what was used since.
                        delta = p.energy_kwh - cur_val if p.energy_kwh >= cur_val else p.energy_kwh
                        entry[0] = float(entry[0]) + delta  # type: ignore[arg-type]
                    entry[1] = r.ts
                    if p.energy_kwh is not None:
                        cur_val = p.energy_kwh
                elif isinstance(p, WastePayload):
                    old = cur_val if isinstance(cur_val, list) else None
                    if same_day and old is not None:
                        day = local_day(r.ts, tz)
                        for i, b in enumerate(p.bins):
                            if i >= len(old):
                                break
                            o = old[i]
                            ow = o.get("weight_kg") if isinstance(o, dict) else None
                            if (
                                b.weight_kg is not None
                                and ow is not None
                                and o.get("category") == b.category
                                and b.weight_kg > ow
                            ):
                                agg.waste[(device_id, day, b.category)] += b.weight_kg - ow
                    cur_val = [
                        {"category": b.category, "fill_pct": b.fill_pct, "weight_kg": b.weight_kg}
                        for b in p.bins
                    ]
                elif isinstance(p, ParkingPayload):
                    if cur_val is False and p.occupied:
                        agg.parking[(device_id, _bucket(r.ts, 60))] += 1
                    cur_val = p.occupied
                cur_ts = r.ts

    def _store_events(
        self, conn: psycopg.Connection, events: list[Event], result: BatchResult, agg: _Aggregates
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
        for e in events:
            key = (e.device_id, e.event_id)
            if key in inserted:
                inserted.discard(key)
                result.stored["event"] += 1
                seq = e.attrs.get("seq")
                agg.add_seq(e.device_id, e.ts, seq if isinstance(seq, int) else None)
            else:
                result.duplicates["event"] += 1

    def _device_state(
        self,
        conn: psycopg.Connection,
        seen: dict[str, tuple[str, datetime]],
        statuses: list[Status],
    ) -> None:
        if not seen:
            return
        newest_status: dict[str, Status] = {}
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

    def _write_aggregates(self, conn: psycopg.Connection, agg: _Aggregates) -> None:
        if agg.energy:
            keys = sorted(agg.energy)
            conn.execute(
                "INSERT INTO energy_daily AS e (device_id, day, consumption_kwh, last_ts) "
                "SELECT * FROM unnest(%s::text[], %s::date[], %s::float8[], %s::timestamptz[]) "
                "ON CONFLICT (device_id, day) DO UPDATE SET "
                "consumption_kwh = e.consumption_kwh + excluded.consumption_kwh, "
                "last_ts = GREATEST(e.last_ts, excluded.last_ts)",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [agg.energy[k][0] for k in keys],
                    [agg.energy[k][1] for k in keys],
                ),
            )
        if agg.waste:
            keys3 = sorted(agg.waste)
            conn.execute(
                "INSERT INTO waste_daily AS w (device_id, day, category, deposited_kg) "
                "SELECT * FROM unnest(%s::text[], %s::date[], %s::text[], %s::float8[]) "
                "ON CONFLICT (device_id, day, category) DO UPDATE SET "
                "deposited_kg = w.deposited_kg + excluded.deposited_kg",
                (
                    [k[0] for k in keys3],
                    [k[1] for k in keys3],
                    [k[2] for k in keys3],
                    [agg.waste[k] for k in keys3],
                ),
            )
        if agg.parking:
            keysp = sorted(agg.parking)
            conn.execute(
                "INSERT INTO parking_hourly AS p (device_id, hour, transitions) "
                "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::int[]) "
                "ON CONFLICT (device_id, hour) DO UPDATE SET "
                "transitions = p.transitions + excluded.transitions",
                ([k[0] for k in keysp], [k[1] for k in keysp], [agg.parking[k] for k in keysp]),
            )
        if agg.seq:
            keyss = sorted(agg.seq)
            conn.execute(
                "INSERT INTO seq_10m AS s (device_id, bucket, min_seq, max_seq, n) "
                "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::int8[], %s::int8[], "
                "%s::int[]) ON CONFLICT (device_id, bucket) DO UPDATE SET "
                "min_seq = LEAST(s.min_seq, excluded.min_seq), "
                "max_seq = GREATEST(s.max_seq, excluded.max_seq), n = s.n + excluded.n",
                (
                    [k[0] for k in keyss],
                    [k[1] for k in keyss],
                    [agg.seq[k][0] for k in keyss],
                    [agg.seq[k][1] for k in keyss],
                    [agg.seq[k][2] for k in keyss],
                ),
            )

    def _autoregister(self, conn: psycopg.Connection, seen: dict[str, tuple[str, datetime]]) -> int:
        ids = sorted(seen)
        rows = conn.execute(
            "INSERT INTO devices (device_id, kind, auto_registered) "
            "SELECT d, k, true FROM unnest(%s::text[], %s::text[]) AS t(d, k) "
            "ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
            (ids, [seen[d][0] for d in ids]),
        ).fetchall()
        return len(rows)

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
                copy.write_row(
                    (
                        m.topic,
                        m.payload,
                        rej.reason.value,
                        rej.detail,
                        m.received_at,
                        self.collector,
                    )
                )

    def _ingest_counters(
        self, conn: psycopg.Connection, result: BatchResult, now: datetime
    ) -> None:
        counts = [0] * (len(LAG_BOUNDS_S) + 1)
        for lag in result.lag_s:
            counts[bisect.bisect_left(LAG_BOUNDS_S, lag)] += 1
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
                _bucket(now, 1),
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
