"""The SQL behind the vital signs: aggregation over the state tables, never raw history.

Every query reads the registry, `device_state`, the `latest_*` tables and the daily,
hourly and 10-minute aggregates the collector maintains in the same transaction as
the readings, so their cost grows with the fleet, not with the history kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import args_row, dict_row

from cityvitals.catalogue import ONLINE_FACTOR, REPORT_INTERVAL_S, Thresholds

# Dead-letter replay writes its ingest counters under this collector name, so that
# re-stored old messages do not count as ingest lag or as fresh traffic.
REPLAY_COLLECTOR = "dead-letter-replay"
# Rows converted per call: psycopg converts a fetch in one go without letting other
# threads run, and the snapshot is read on a thread beside the loop serving screens.
ROWS_PER_FETCH = 200

# A device is online when its newest message of any channel is younger than
# ONLINE_FACTOR report intervals and no later-or-equal retained status said offline:
# a message after the last will revives the device (see docs/indicators.md). The write
# path keeps `last_seen_at` as the newest message time by its `ts` (the receive time
# only where it had none), so a backlog of old readings delivered now stays offline.
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
class Totals:
    """Sums over the waste huts or the energy meters of one district (None: no district).

    The counts follow the per-entity rules of `compute.Builder` exactly; a reporting
    device is an online one with a latest reading.
    """

    district: str | None
    kind: str
    registered: int
    online: int
    reporting: int
    newest: datetime | None
    max_iv: int
    low_battery: int
    bins: int
    fill_sum: float
    huts_full: int
    gas_alarms: int
    fire_risk: int
    seepage: int
    dropoffs: int
    load_kw: float
    adjustable_kw: float
    consumption_kwh: float
    low_pf: int
    voltage_dev: int
    key_registered: int
    key_online: int


@dataclass(frozen=True, slots=True)
class SiteLoadRow:
    """One energy site's live load against its contracted capacity."""

    district: str | None
    site: str
    load_kw: float | None
    contract_kw: float | None
    newest: datetime | None


@dataclass(frozen=True, slots=True)
class EntityThresholds:
    """The per-entity thresholds and limits in force (the catalogue's, or a deployment's).

    The SQL sums and the row-by-row computation both read these, so what a count counts
    and the status its entities take move together when a deployment overrides them.
    """

    full: Thresholds
    fire: Thresholds
    fill: Thresholds | None
    power_factor: Thresholds
    load_share: Thresholds
    lot_near_full: float
    # gas -> limit from which a hut is counted (warning) and from which it is critical
    gas_warning: Mapping[str, float]
    gas_critical: Mapping[str, float]
    # a meter is counted (warning) outside [voltage_low, voltage_high]
    voltage_low: float
    voltage_high: float
    # kind -> battery voltage below which a device counts as low
    low_battery_v: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class EntityInputs:
    """Every lot, hut and meter (of the city or of one district), row by row."""

    lots: list[LotRow]
    huts: list[HutRow]
    meters: list[MeterRow]
    unassigned: int
    ingest: list[IngestRow]


@dataclass(frozen=True, slots=True)
class FastInputs:
    """Everything the per-second snapshot reads: sums per district, and row by row only
    the entities past a threshold or with an active alert (whatever the fleet size,
    a few hundred rows instead of one per device)."""

    lots: list[LotRow]
    totals: list[Totals]
    deposited: list[tuple[str | None, str, float]]
    huts: list[HutRow]
    meters: list[MeterRow]
    site_loads: list[SiteLoadRow]
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
    "WHERE dev.kind = 'parking' {only} GROUP BY dev.district, dev.site"
)

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
    "WHERE dev.kind = 'waste' {only}"
)

_METERS = sql.SQL(
    "WITH {dev} "
    "SELECT dev.device_id, dev.district, dev.site, dev.name, dev.iv, dev.online, "
    "dev.key_consumer, dev.contract_kw, l.ts, l.active_power_kw, l.voltage_v, "
    "l.power_factor, l.adjustable_kw, e.consumption_kwh "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "LEFT JOIN energy_daily e ON e.device_id = dev.device_id AND e.day = %(day)s "
    "WHERE dev.kind = 'energy' {only}"
)

# The entities of the per-second snapshot: reporting and either past the lowest bound of
# one of their per-entity thresholds, or carrying an active alert (to escalate or clear).
ACTIVE_ALERT_SQL = sql.SQL(
    "{entity} IN (SELECT entity FROM alerts WHERE state = 'active' AND indicator = ANY({ids}))"
)

_WASTE_TOTALS = sql.SQL(
    "WITH {dev}, "
    "dropoffs AS (SELECT device_id, count(*) AS n FROM events "
    "WHERE type = 'off_hours_dropoff' AND ts >= %(midnight)s AND ts < %(next_midnight)s "
    "GROUP BY device_id), "
    "h AS (SELECT dev.district, dev.iv, dev.online, dev.online AND l.ts IS NOT NULL AS rep, "
    "l.ts, coalesce(jsonb_array_length(l.bins), 0) AS n_bins, l.fill_mean, l.fill_max, "
    "l.h2s_ppm, l.nh3_ppm, l.ch4_pct_lel, l.temp_c, l.seepage, l.battery_v, "
    "coalesce(dropoffs.n, 0) AS n_drop "
    "FROM dev LEFT JOIN latest_waste l ON l.device_id = dev.device_id "
    "LEFT JOIN dropoffs ON dropoffs.device_id = dev.device_id WHERE dev.kind = 'waste') "
    "SELECT district, 'waste', count(*), count(*) FILTER (WHERE online), "
    "count(*) FILTER (WHERE rep), max(ts) FILTER (WHERE rep), max(iv), "
    "count(*) FILTER (WHERE rep AND battery_v < %(low)s::float8), "
    "coalesce(sum(n_bins) FILTER (WHERE rep), 0)::bigint, "
    "coalesce(sum(coalesce(fill_mean, 0) * n_bins) FILTER (WHERE rep), 0)::float8, "
    "count(*) FILTER (WHERE rep AND {full}), "
    "count(*) FILTER (WHERE rep AND (h2s_ppm >= %(gas_h2s)s::float8 "
    "OR nh3_ppm >= %(gas_nh3)s::float8 OR ch4_pct_lel >= %(gas_ch4)s::float8)), "
    "count(*) FILTER (WHERE rep AND {fire}), "
    "count(*) FILTER (WHERE rep AND seepage), "
    "coalesce(sum(n_drop) FILTER (WHERE rep), 0)::bigint, "
    "0.0::float8, 0.0::float8, 0.0::float8, 0, 0, 0, 0 "
    "FROM h GROUP BY district"
)

_DEPOSITED = sql.SQL(
    "WITH {dev} SELECT dev.district, w.category, sum(w.deposited_kg)::float8 FROM dev "
    "JOIN latest_waste l ON l.device_id = dev.device_id "
    "JOIN waste_daily w ON w.device_id = dev.device_id AND w.day = %(day)s "
    "WHERE dev.kind = 'waste' AND dev.online GROUP BY dev.district, w.category"
).format(dev=DEVICES_CTE)

_ENERGY_TOTALS = sql.SQL(
    "WITH {dev}, "
    "m AS (SELECT dev.district, dev.iv, dev.online, dev.key_consumer, "
    "dev.online AND l.ts IS NOT NULL AS rep, l.ts, l.active_power_kw, l.voltage_v, "
    "l.power_factor, l.adjustable_kw, e.consumption_kwh "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "LEFT JOIN energy_daily e ON e.device_id = dev.device_id AND e.day = %(day)s "
    "WHERE dev.kind = 'energy') "
    "SELECT district, 'energy', count(*), count(*) FILTER (WHERE online), "
    "count(*) FILTER (WHERE rep), max(ts) FILTER (WHERE rep), max(iv), "
    "0, 0, 0.0::float8, 0, 0, 0, 0, 0, "
    "coalesce(sum(active_power_kw) FILTER (WHERE rep), 0)::float8, "
    "coalesce(sum(adjustable_kw) FILTER (WHERE rep), 0)::float8, "
    "coalesce(sum(consumption_kwh) FILTER (WHERE rep), 0)::float8, "
    "count(*) FILTER (WHERE rep AND {low_pf}), "
    "count(*) FILTER (WHERE rep AND NOT (voltage_v BETWEEN %(v_low)s::float8 "
    "AND %(v_high)s::float8)), "
    "count(*) FILTER (WHERE key_consumer), count(*) FILTER (WHERE key_consumer AND online) "
    "FROM m GROUP BY district"
)

_SITE_LOADS = sql.SQL(
    "WITH {dev}, "
    "s AS (SELECT dev.district, coalesce(dev.site, dev.device_id) AS site, "
    "sum(l.active_power_kw) FILTER (WHERE dev.online AND l.ts IS NOT NULL) AS load_kw, "
    "sum(dev.contract_kw) FILTER (WHERE dev.contract_kw <> 0) AS contract_kw, "
    "max(l.ts) FILTER (WHERE dev.online AND l.ts IS NOT NULL) AS newest "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "WHERE dev.kind = 'energy' GROUP BY 1, 2) "
    "SELECT district, site, load_kw, nullif(contract_kw, 0), newest FROM s "
    "WHERE load_kw IS NOT NULL AND coalesce(contract_kw, 0) <> 0 "
    "AND ({share} OR {active})"
)


def beyond(column: str, th: Thresholds | None, name: str, params: dict[str, Any]) -> sql.Composable:
    """`column` past the lowest bound of `th` (any status but normal), as SQL."""
    bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None] if th else []
    if th is None or not bounds:
        return sql.SQL("false")
    if th.direction == "lt":
        params[name] = max(bounds)
        return sql.SQL("coalesce({} < %({})s::float8, false)").format(
            sql.SQL(column), sql.SQL(name)
        )
    params[name] = min(bounds)
    return sql.SQL("coalesce({} >= %({})s::float8, false)").format(sql.SQL(column), sql.SQL(name))


def _active(entity: str, *indicators: str) -> sql.Composable:
    return ACTIVE_ALERT_SQL.format(entity=sql.SQL(entity), ids=sql.Literal(list(indicators)))


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


async def _rows(
    conn: AsyncConnection[Any],
    cls: type[Any],
    query: sql.SQL | sql.Composed,
    params: dict[str, Any],
) -> list[Any]:
    # The row classes take their fields positionally (psycopg's `args_row`, several
    # times faster than keyword construction): the SELECT lists above name the columns
    # in the order of the dataclass fields.
    async with conn.cursor(row_factory=args_row(cls)) as cur:
        await cur.execute(query, params)
        rows: list[Any] = []
        while batch := await cur.fetchmany(ROWS_PER_FETCH):
            rows += batch
        return rows


async def _unassigned_and_ingest(
    conn: AsyncConnection[Any], now: datetime
) -> tuple[int, list[IngestRow]]:
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM devices WHERE district IS NULL AND auto_registered")
        unassigned_row = await cur.fetchone()
        first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
        await cur.execute(
            "SELECT minute, received, rejected, lag_counts FROM ingest_minutely "
            "WHERE minute >= %s AND minute <= %s AND collector <> %s",
            (first_minute, now, REPLAY_COLLECTOR),
        )
        ingest = [IngestRow(*row) for row in await cur.fetchall()]
    return (int(unassigned_row[0]) if unassigned_row else 0), ingest


def _day_params(
    now: datetime, day: date, midnight: datetime, next_midnight: datetime
) -> dict[str, Any]:
    return base_params(now) | {"day": day, "midnight": midnight, "next_midnight": next_midnight}


def _lot_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    return params | {"low": th.low_battery_v.get("parking")}


def _waste_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    return params | {
        "low": th.low_battery_v.get("waste"),
        "gas_h2s": th.gas_warning["h2s_ppm"],
        "gas_nh3": th.gas_warning["nh3_ppm"],
        "gas_ch4": th.gas_warning["ch4_pct_lel"],
    }


def _energy_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    return params | {"v_low": th.voltage_low, "v_high": th.voltage_high}


ONLY_FLAGGED = sql.SQL("AND dev.online AND l.ts IS NOT NULL AND ({})")


async def _fast_lots(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    out["lots"] = await _rows(
        conn,
        LotRow,
        _LOTS.format(dev=DEVICES_CTE, only=sql.SQL("")),
        _lot_params(p["params"], p["th"]),
    )


async def _fast_waste(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    wp = _waste_params(p["params"], th)
    # A hut counts as full, or for fire risk, from the lowest bound of its per-hut
    # thresholds: the count and the hut's status read the same thresholds.
    totals = _WASTE_TOTALS.format(
        dev=DEVICES_CTE,
        full=beyond("fill_max", th.full, "c_full", wp),
        fire=beyond("temp_c", th.fire, "c_fire", wp),
    )
    out["waste_totals"] = await _rows(conn, Totals, totals, wp)
    async with conn.cursor() as cur:
        await cur.execute(_DEPOSITED, p["params"])
        out["deposited"] = [(r[0], str(r[1]), float(r[2])) for r in await cur.fetchall()]
    hut_flags = sql.SQL(" OR ").join(
        [
            beyond("l.fill_max", th.full, "f_full", wp),
            beyond("l.temp_c", th.fire, "f_fire", wp),
            sql.SQL("coalesce(l.seepage, false)"),
            sql.SQL(
                "coalesce(l.h2s_ppm >= %(gas_h2s)s::float8 OR l.nh3_ppm >= %(gas_nh3)s::float8 "
                "OR l.ch4_pct_lel >= %(gas_ch4)s::float8, false)"
            ),
            sql.SQL("(jsonb_array_length(l.bins) > 0 AND {})").format(
                beyond("l.fill_mean", th.fill, "f_fill", wp)
            ),
            _active(
                "dev.device_id",
                "waste.huts_full",
                "waste.gas_alarms",
                "waste.fire_risk",
                "waste.seepage",
                "waste.fill_pct_mean",
            ),
        ]
    )
    out["huts"] = await _rows(
        conn, HutRow, _HUTS.format(dev=DEVICES_CTE, only=ONLY_FLAGGED.format(hut_flags)), wp
    )


async def _fast_energy(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    ep = _energy_params(p["params"], th)
    totals = _ENERGY_TOTALS.format(
        dev=DEVICES_CTE, low_pf=beyond("power_factor", th.power_factor, "c_pf", ep)
    )
    out["energy_totals"] = await _rows(conn, Totals, totals, ep)
    meter_flags = sql.SQL(" OR ").join(
        [
            beyond("l.power_factor", th.power_factor, "f_pf", ep),
            sql.SQL(
                "coalesce(NOT (l.voltage_v BETWEEN %(v_low)s::float8 AND %(v_high)s::float8), "
                "false)"
            ),
            _active("dev.device_id", "energy.low_power_factor", "energy.voltage_deviation"),
        ]
    )
    out["meters"] = await _rows(
        conn, MeterRow, _METERS.format(dev=DEVICES_CTE, only=ONLY_FLAGGED.format(meter_flags)), ep
    )


async def _fast_sites(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    sp = dict(p["params"])
    out["site_loads"] = await _rows(
        conn,
        SiteLoadRow,
        _SITE_LOADS.format(
            dev=DEVICES_CTE,
            share=beyond("load_kw / nullif(contract_kw, 0)", th.load_share, "f_share", sp),
            active=_active("coalesce(district, 'unassigned') || '/' || site", "energy.load_kw"),
        ),
        sp,
    )
    out["unassigned"], out["ingest"] = await _unassigned_and_ingest(conn, p["params"]["now"])


# The parts of a snapshot's reads, dealt round-robin to the connections: on three, waste
# and sites share one, lots and energy have one each (about 0.5 s each at 200,000
# devices on this project's 2-core machine).
_FAST_PARTS = (_fast_waste, _fast_lots, _fast_energy, _fast_sites)


async def fetch_fast(
    conns: Sequence[AsyncConnection[Any]],
    *,
    now: datetime,
    day: date,
    midnight: datetime,
    next_midnight: datetime,
    th: EntityThresholds,
) -> FastInputs:
    """Read what one snapshot needs: sums in SQL, rows only for entities worth a check.

    The parts run concurrently, dealt round-robin to the connections given, so that a
    refresh over a large fleet takes the time of its largest part, not of all of them.
    """
    params = _day_params(now, day, midnight, next_midnight)
    p: dict[str, Any] = params | {"params": params, "th": th}
    out: dict[str, Any] = {}

    async def run(conn: AsyncConnection[Any], parts: Sequence[Any]) -> None:
        for part in parts:
            await part(conn, p, out)

    n = max(1, min(len(conns), len(_FAST_PARTS)))
    await asyncio.gather(*(run(conns[i], _FAST_PARTS[i::n]) for i in range(n)))
    return FastInputs(
        lots=out["lots"],
        totals=out["waste_totals"] + out["energy_totals"],
        deposited=out["deposited"],
        huts=out["huts"],
        meters=out["meters"],
        site_loads=out["site_loads"],
        unassigned=out["unassigned"],
        ingest=out["ingest"],
    )


async def fetch_entities(
    conn: AsyncConnection[Any],
    *,
    now: datetime,
    day: date,
    midnight: datetime,
    next_midnight: datetime,
    district: str | None,
    th: EntityThresholds,
) -> EntityInputs:
    """Every lot, hut and meter of one district (None: of the city), row by row."""
    params = _day_params(now, day, midnight, next_midnight) | {"district": district}
    only = sql.SQL("AND dev.district = %(district)s" if district is not None else "")
    lots = await _rows(
        conn, LotRow, _LOTS.format(dev=DEVICES_CTE, only=only), _lot_params(params, th)
    )
    huts = await _rows(
        conn, HutRow, _HUTS.format(dev=DEVICES_CTE, only=only), _waste_params(params, th)
    )
    meters = await _rows(conn, MeterRow, _METERS.format(dev=DEVICES_CTE, only=only), params)
    if district is not None:
        # A district's sites use neither the unassigned devices nor the ingest counters.
        return EntityInputs(lots, huts, meters, 0, [])
    unassigned, ingest = await _unassigned_and_ingest(conn, now)
    return EntityInputs(lots, huts, meters, unassigned, ingest)


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
