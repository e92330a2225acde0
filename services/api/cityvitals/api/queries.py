"""The SQL behind the vital signs: aggregation over the state tables, never raw history.

Every query reads the registry, `device_state`, the `latest_*` tables and the daily,
hourly and 10-minute aggregates the collector maintains in the same transaction as
the readings, so their cost grows with the fleet, not with the history kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import args_row, dict_row

from cityvitals.catalogue import LOW_BATTERY_V, ONLINE_FACTOR, REPORT_INTERVAL_S

# Dead-letter replay writes its ingest counters under this collector name, so that
# re-stored old messages do not count as ingest lag or as fresh traffic.
REPLAY_COLLECTOR = "dead-letter-replay"

# A device is online when its newest message of any channel is younger than
# ONLINE_FACTOR report intervals and no later-or-equal retained status said offline:
# a message after the last will revives the device (see docs/indicators.md).
INTERVAL_SQL = sql.SQL(
    "coalesce(d.report_interval_s, CASE d.kind WHEN 'parking' THEN %(iv_parking)s::int "
    "WHEN 'waste' THEN %(iv_waste)s::int ELSE %(iv_energy)s::int END)"
)
ONLINE_SQL = sql.SQL(
    "coalesce(s.last_seen_at > %(now)s::timestamptz - make_interval(secs => "
    "%(factor)s::float8 * {interval}) AND NOT coalesce(s.status_online = false "
    "AND s.status_at >= s.last_seen_at, false), false)"
).format(interval=INTERVAL_SQL)
DEVICES_CTE = sql.SQL(
    "dev AS (SELECT d.*, {interval} AS iv, {online} AS online, "
    "s.last_seen_at, s.status_online FROM devices d "
    "LEFT JOIN device_state s ON s.device_id = d.device_id)"
).format(interval=INTERVAL_SQL, online=ONLINE_SQL)


def base_params(now: datetime) -> dict[str, Any]:
    """Parameters every query built on `DEVICES_CTE` needs."""
    return {
        "now": now,
        "factor": float(ONLINE_FACTOR),
        "iv_parking": REPORT_INTERVAL_S["parking"],
        "iv_waste": REPORT_INTERVAL_S["waste"],
        "iv_energy": REPORT_INTERVAL_S["energy"],
    }


@dataclass(frozen=True, slots=True)
class LotRow:
    """Parking sensors of one lot (or of no lot) in one district."""

    district: str | None
    site: str | None
    registered: int
    online: int
    reporting: int
    occupied: int
    low_battery: int
    newest: datetime | None
    max_iv: int


@dataclass(frozen=True, slots=True)
class HutRow:
    """One waste hut with its latest reading and today's figures."""

    device_id: str
    district: str | None
    site: str | None
    name: str | None
    iv: int
    online: bool
    ts: datetime | None
    n_bins: int
    fill_mean: float | None
    fill_max: float | None
    h2s_ppm: float | None
    nh3_ppm: float | None
    ch4_pct_lel: float | None
    temp_c: float | None
    seepage: bool | None
    low_battery: bool
    dropoffs_today: int
    deposited_kg: dict[str, float]


@dataclass(frozen=True, slots=True)
class MeterRow:
    """One energy meter with its latest reading and today's consumption."""

    device_id: str
    district: str | None
    site: str | None
    name: str | None
    iv: int
    online: bool
    key_consumer: bool
    contract_kw: float | None
    ts: datetime | None
    active_power_kw: float | None
    voltage_v: float | None
    power_factor: float | None
    adjustable_kw: float | None
    consumption_kwh: float | None


@dataclass(frozen=True, slots=True)
class IngestRow:
    """One minute of one collector's ingest counters."""

    minute: datetime
    received: int
    rejected: int
    lag_counts: list[int]


@dataclass(frozen=True, slots=True)
class FastInputs:
    """Everything the per-second snapshot reads."""

    lots: list[LotRow]
    huts: list[HutRow]
    meters: list[MeterRow]
    unassigned: int
    ingest: list[IngestRow]


@dataclass(frozen=True, slots=True)
class SlowInputs:
    """The slower figures, refreshed every `slow_refresh_interval_s`."""

    day: date | None = None
    # district (None = unassigned) -> free→occupied transitions of online sensors, 24 h
    transitions: dict[str | None, int] | None = None
    # district -> (received, expected) from `seq` over the last hour
    completeness: dict[str | None, tuple[int, int]] | None = None
    # scope -> max 1-minute load sampled since local midnight
    peaks: dict[str, float] | None = None


_LOTS = sql.SQL(
    "WITH {dev} SELECT dev.district, dev.site, count(*) AS registered, "
    "count(*) FILTER (WHERE dev.online) AS online, "
    "count(l.device_id) FILTER (WHERE dev.online) AS reporting, "
    "count(*) FILTER (WHERE dev.online AND l.occupied) AS occupied, "
    "count(*) FILTER (WHERE dev.online AND l.battery_v < %(low)s::float8) AS low_battery, "
    "max(l.ts) FILTER (WHERE dev.online) AS newest, max(dev.iv) AS max_iv "
    "FROM dev LEFT JOIN latest_parking l ON l.device_id = dev.device_id "
    "WHERE dev.kind = 'parking' GROUP BY dev.district, dev.site"
).format(dev=DEVICES_CTE)

_HUTS = sql.SQL(
    "WITH {dev}, "
    "dropoffs AS (SELECT device_id, count(*) AS n FROM events "
    "WHERE type = 'off_hours_dropoff' AND ts >= %(midnight)s AND ts < %(next_midnight)s "
    "GROUP BY device_id), "
    "deposited AS (SELECT device_id, jsonb_object_agg(category, deposited_kg) AS kg "
    "FROM waste_daily WHERE day = %(day)s GROUP BY device_id) "
    "SELECT dev.device_id, dev.district, dev.site, dev.name, dev.iv, dev.online, l.ts, "
    "coalesce(jsonb_array_length(l.bins), 0) AS n_bins, l.fill_mean, l.fill_max, "
    "l.h2s_ppm, l.nh3_ppm, l.ch4_pct_lel, l.temp_c, l.seepage, "
    "coalesce(l.battery_v < %(low)s::float8, false) AS low_battery, "
    "coalesce(dropoffs.n, 0) AS dropoffs_today, coalesce(deposited.kg, '{{}}') AS deposited_kg "
    "FROM dev LEFT JOIN latest_waste l ON l.device_id = dev.device_id "
    "LEFT JOIN dropoffs ON dropoffs.device_id = dev.device_id "
    "LEFT JOIN deposited ON deposited.device_id = dev.device_id "
    "WHERE dev.kind = 'waste'"
).format(dev=DEVICES_CTE)

_METERS = sql.SQL(
    "WITH {dev} "
    "SELECT dev.device_id, dev.district, dev.site, dev.name, dev.iv, dev.online, "
    "dev.key_consumer, dev.contract_kw, l.ts, l.active_power_kw, l.voltage_v, "
    "l.power_factor, l.adjustable_kw, e.consumption_kwh "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "LEFT JOIN energy_daily e ON e.device_id = dev.device_id AND e.day = %(day)s "
    "WHERE dev.kind = 'energy'"
).format(dev=DEVICES_CTE)

_TRANSITIONS = sql.SQL(
    "WITH {dev}, "
    "t AS (SELECT device_id, sum(transitions) AS n FROM parking_hourly "
    "WHERE hour > %(since)s AND hour <= %(now)s GROUP BY device_id) "
    "SELECT dev.district, coalesce(sum(t.n), 0)::bigint FROM dev "
    "JOIN t ON t.device_id = dev.device_id "
    "WHERE dev.kind = 'parking' AND dev.online GROUP BY dev.district"
).format(dev=DEVICES_CTE)

_COMPLETENESS = sql.SQL(
    "WITH {dev}, "
    "q AS (SELECT device_id, sum(n)::bigint AS n, max(max_seq) - min(min_seq) + 1 AS expected "
    "FROM seq_10m WHERE bucket > %(since)s AND bucket <= %(now)s GROUP BY device_id) "
    "SELECT dev.district, sum(q.n)::bigint, sum(greatest(q.expected, q.n))::bigint FROM dev "
    "JOIN q ON q.device_id = dev.device_id WHERE dev.online GROUP BY dev.district"
).format(dev=DEVICES_CTE)

_PEAKS = (
    "SELECT scope, max(value) FROM indicator_samples WHERE indicator = 'energy.load_kw' "
    "AND ts >= %(midnight)s AND ts <= %(now)s AND value IS NOT NULL GROUP BY scope"
)


# The row classes take their fields positionally (psycopg's `args_row`, several times
# faster than keyword construction for 10^5 rows): the SELECT lists above name the
# columns in the order of the dataclass fields.
async def fetch_fast(
    conn: AsyncConnection[Any],
    *,
    now: datetime,
    day: date,
    midnight: datetime,
    next_midnight: datetime,
) -> FastInputs:
    """Read the state tables for one snapshot."""
    params = base_params(now) | {
        "day": day,
        "midnight": midnight,
        "next_midnight": next_midnight,
    }
    async with conn.cursor() as cur:
        async with conn.cursor(row_factory=args_row(LotRow)) as lcur:
            await lcur.execute(_LOTS, params | {"low": LOW_BATTERY_V.get("parking")})
            lots = await lcur.fetchall()
        async with conn.cursor(row_factory=args_row(HutRow)) as hcur:
            await hcur.execute(_HUTS, params | {"low": LOW_BATTERY_V.get("waste")})
            huts = await hcur.fetchall()
        async with conn.cursor(row_factory=args_row(MeterRow)) as mcur:
            await mcur.execute(_METERS, params)
            meters = await mcur.fetchall()
        await cur.execute("SELECT count(*) FROM devices WHERE district IS NULL AND auto_registered")
        unassigned_row = await cur.fetchone()
        first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
        await cur.execute(
            "SELECT minute, received, rejected, lag_counts FROM ingest_minutely "
            "WHERE minute >= %s AND minute <= %s AND collector <> %s",
            (first_minute, now, REPLAY_COLLECTOR),
        )
        ingest = [IngestRow(*row) for row in await cur.fetchall()]
    return FastInputs(
        lots=lots,
        huts=huts,
        meters=meters,
        unassigned=int(unassigned_row[0]) if unassigned_row else 0,
        ingest=ingest,
    )


async def fetch_slow(
    conn: AsyncConnection[Any], *, now: datetime, day: date, midnight: datetime
) -> SlowInputs:
    """Read the figures that look back over hours: turnover, completeness, peaks."""
    params = base_params(now)
    async with conn.cursor() as cur:
        await cur.execute(_TRANSITIONS, params | {"since": now - timedelta(hours=24)})
        transitions = {row[0]: int(row[1]) for row in await cur.fetchall()}
        await cur.execute(_COMPLETENESS, params | {"since": now - timedelta(hours=1)})
        completeness = {row[0]: (int(row[1]), int(row[2])) for row in await cur.fetchall()}
        await cur.execute(_PEAKS, {"midnight": midnight, "now": now})
        peaks = {row[0]: float(row[1]) for row in await cur.fetchall()}
    return SlowInputs(day=day, transitions=transitions, completeness=completeness, peaks=peaks)


async def schema_facts(conn: AsyncConnection[Any]) -> dict[str, Any]:
    """The migration revision, the storage kind and whether the hourly rollup exists."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT (SELECT version_num FROM alembic_version LIMIT 1) AS revision, "
            "(SELECT value FROM schema_info WHERE key = 'storage') AS storage, "
            "to_regclass('indicator_samples_1h') IS NOT NULL AS has_rollup"
        )
        row = await cur.fetchone()
    return dict(row) if row else {}
