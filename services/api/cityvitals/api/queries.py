"""The reads behind the vital signs: aggregation over the state tables, never raw history.

Every query reads the registry, `device_state`, the `latest_*` tables and the daily,
hourly and 10-minute aggregates the collector maintains in the same transaction as
the readings, so their cost grows with the fleet, not with the history kept. Each
domain's SQL and row types live in its module (`cityvitals.api.indicators.*`); this
module runs them: the per-second snapshot's reads, a district's rows, the slow figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from cityvitals.api.indicators import parking
from cityvitals.api.indicators.db import (
    DEVICES_CTE,
    ONLINE_SQL,
    ONLY_FLAGGED,
    EntityThresholds,
    SlowInputs,
    Totals,
    active,
    base_params,
    beyond,
    fetch_rows,
)
from cityvitals.api.indicators.devices import COMPLETENESS_SQL, IngestRow
from cityvitals.api.indicators.energy import (
    ENERGY_TOTALS_SQL,
    METERS_SQL,
    PEAKS_SQL,
    SITE_LOADS_SQL,
    MeterRow,
    SiteLoadRow,
    energy_params,
)
from cityvitals.api.indicators.parking import LOTS_SQL, TRANSITIONS_SQL, LotRow, lot_params
from cityvitals.api.indicators.waste import (
    DEPOSITED_SQL,
    HUTS_SQL,
    WASTE_TOTALS_SQL,
    HutRow,
    waste_params,
)
from cityvitals.catalogue import Thresholds
from cityvitals.replay import REPLAY_COLLECTOR

OCCUPANCY = "parking.occupancy_ratio"
# The slow figures' statement timeout (the API's own is 15 s).
SLOW_TIMEOUT = "120s"

__all__ = [
    "ONLINE_SQL",
    "REPLAY_COLLECTOR",
    "EntityInputs",
    "EntityThresholds",
    "FastInputs",
    "HutRow",
    "IngestRow",
    "LotRow",
    "MeterRow",
    "SiteLoadRow",
    "SlowInputs",
    "Totals",
    "base_params",
    "fetch_entities",
    "fetch_fast",
    "fetch_ingest",
    "fetch_peaks",
    "fetch_slow",
    "schema_facts",
]

# Dead-letter replay writes its ingest counters under this collector name, so that


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
    """Everything the per-second snapshot reads: sums per district and kind, and row by
    row only the entities past a threshold or with an active alert (whatever the fleet
    size, a few hundred rows instead of one per device)."""

    # the lots past an occupancy bound or with an active alert
    lots: list[LotRow]
    totals: list[Totals]
    deposited: list[tuple[str | None, str, float]]
    huts: list[HutRow]
    meters: list[MeterRow]
    site_loads: list[SiteLoadRow]
    unassigned: int
    ingest: list[IngestRow]


async def fetch_ingest(conn: AsyncConnection[Any], now: datetime) -> list[IngestRow]:
    """The collectors' counters of the last ten minutes (replays left out)."""
    async with conn.cursor() as cur:
        first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
        await cur.execute(
            "SELECT minute, received, rejected, lag_counts FROM ingest_minutely "
            "WHERE minute >= %s AND minute <= %s AND collector <> %s",
            (first_minute, now, REPLAY_COLLECTOR),
        )
        return [IngestRow(*row) for row in await cur.fetchall()]


async def _unassigned_and_ingest(
    conn: AsyncConnection[Any], now: datetime
) -> tuple[int, list[IngestRow]]:
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM devices WHERE district IS NULL AND auto_registered")
        unassigned_row = await cur.fetchone()
    return (int(unassigned_row[0]) if unassigned_row else 0), await fetch_ingest(conn, now)


def _day_params(
    now: datetime, day: date, midnight: datetime, next_midnight: datetime
) -> dict[str, Any]:
    return base_params(now) | {"day": day, "midnight": midnight, "next_midnight": next_midnight}


async def _fast_lots(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    lots: list[LotRow] = await fetch_rows(
        conn,
        LotRow,
        LOTS_SQL.format(dev=DEVICES_CTE, only=sql.SQL("")),
        lot_params(p["params"], th),
    )
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT entity FROM alerts WHERE state = 'active' AND indicator = %s",
            (OCCUPANCY,),
        )
        alerted = {str(r[0]) for r in await cur.fetchall()}
    out["parking_totals"] = parking.district_totals(lots, th)
    out["lots"] = [r for r in lots if parking.flagged(r, p["occupancy"], alerted)]


async def _fast_waste(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    wp = waste_params(p["params"], th)
    # A hut counts as full, or for fire risk, from the lowest bound of its per-hut
    # thresholds: the count and the hut's status read the same thresholds.
    totals = WASTE_TOTALS_SQL.format(
        dev=DEVICES_CTE,
        full=beyond("fill_max", th.full, "c_full", wp),
        fire=beyond("temp_c", th.fire, "c_fire", wp),
    )
    out["waste_totals"] = await fetch_rows(conn, Totals, totals, wp)
    async with conn.cursor() as cur:
        await cur.execute(DEPOSITED_SQL, p["params"])
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
            active(
                "dev.device_id",
                "waste.huts_full",
                "waste.gas_alarms",
                "waste.fire_risk",
                "waste.seepage",
                "waste.fill_pct_mean",
            ),
        ]
    )
    out["huts"] = await fetch_rows(
        conn,
        HutRow,
        HUTS_SQL.format(dev=DEVICES_CTE, ids=sql.SQL(""), only=ONLY_FLAGGED.format(hut_flags)),
        wp,
    )


async def _fast_energy(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    ep = energy_params(p["params"], th)
    totals = ENERGY_TOTALS_SQL.format(
        dev=DEVICES_CTE, low_pf=beyond("power_factor", th.power_factor, "c_pf", ep)
    )
    out["energy_totals"] = await fetch_rows(conn, Totals, totals, ep)
    meter_flags = sql.SQL(" OR ").join(
        [
            beyond("l.power_factor", th.power_factor, "f_pf", ep),
            sql.SQL(
                "coalesce(NOT (l.voltage_v BETWEEN %(v_low)s::float8 AND %(v_high)s::float8), "
                "false)"
            ),
            active("dev.device_id", "energy.low_power_factor", "energy.voltage_deviation"),
        ]
    )
    out["meters"] = await fetch_rows(
        conn,
        MeterRow,
        METERS_SQL.format(dev=DEVICES_CTE, only=ONLY_FLAGGED.format(meter_flags)),
        ep,
    )


async def _fast_sites(conn: AsyncConnection[Any], p: dict[str, Any], out: dict[str, Any]) -> None:
    th: EntityThresholds = p["th"]
    sp = dict(p["params"])
    out["site_loads"] = await fetch_rows(
        conn,
        SiteLoadRow,
        SITE_LOADS_SQL.format(
            dev=DEVICES_CTE,
            share=beyond("load_kw / nullif(contract_kw, 0)", th.load_share, "f_share", sp),
            active=active("coalesce(district, 'unassigned') || '/' || site", "energy.load_kw"),
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
    occupancy: Thresholds | None,
) -> FastInputs:
    """Read what one snapshot needs from scratch: sums in SQL, rows only for entities
    worth a check (`occupancy`: the lots' thresholds in force). The running API keeps
    the same inputs in memory instead (`cityvitals.api.fleet`); this is the definition
    its tests hold it to.

    The parts run concurrently, dealt round-robin to the connections given, so that a
    refresh over a large fleet takes the time of its largest part, not of all of them.
    """
    params = _day_params(now, day, midnight, next_midnight)
    p: dict[str, Any] = params | {"params": params, "th": th, "occupancy": occupancy}
    out: dict[str, Any] = {}

    async def run(conn: AsyncConnection[Any], parts: Sequence[Any]) -> None:
        for part in parts:
            await part(conn, p, out)

    n = max(1, min(len(conns), len(_FAST_PARTS)))
    await asyncio.gather(*(run(conns[i], _FAST_PARTS[i::n]) for i in range(n)))
    return FastInputs(
        lots=out["lots"],
        totals=out["parking_totals"] + out["waste_totals"] + out["energy_totals"],
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
    lots = await fetch_rows(
        conn, LotRow, LOTS_SQL.format(dev=DEVICES_CTE, only=only), lot_params(params, th)
    )
    huts = await fetch_rows(
        conn,
        HutRow,
        HUTS_SQL.format(dev=DEVICES_CTE, ids=sql.SQL(""), only=only),
        waste_params(params, th),
    )
    meters = await fetch_rows(conn, MeterRow, METERS_SQL.format(dev=DEVICES_CTE, only=only), params)
    if district is not None:
        # A district's sites use neither the unassigned devices nor the ingest counters.
        return EntityInputs(lots, huts, meters, 0, [])
    unassigned, ingest = await _unassigned_and_ingest(conn, now)
    return EntityInputs(lots, huts, meters, unassigned, ingest)


async def fetch_slow(
    conn: AsyncConnection[Any], *, now: datetime, day: date, midnight: datetime
) -> SlowInputs:
    """The figures that look back over hours, from scratch: turnover, completeness, peaks.

    This is the definition the city state in memory is held to (`Fleet.windowed` keeps
    the first two per device and is what the refreshes serve)."""
    params = base_params(now)
    async with conn.transaction(), conn.cursor() as cur:
        # These read the last hour or day of every reporting device: at 2,000,000
        # devices several seconds, past the API's statement timeout; and a hash join
        # whatever the planner believes of tables not analysed since a large fill.
        await cur.execute("SELECT set_config('statement_timeout', %s, true)", (SLOW_TIMEOUT,))
        await cur.execute("SET LOCAL enable_nestloop = off")
        await cur.execute(TRANSITIONS_SQL, params | {"since": now - timedelta(hours=24)})
        transitions = {row[0]: int(row[1]) for row in await cur.fetchall()}
        await cur.execute(COMPLETENESS_SQL, params | {"since": now - timedelta(hours=1)})
        completeness = {row[0]: (int(row[1]), int(row[2])) for row in await cur.fetchall()}
    peaks = await fetch_peaks(conn, now=now, day=day, midnight=midnight)
    return replace(peaks, transitions=transitions, completeness=completeness)


async def fetch_peaks(
    conn: AsyncConnection[Any], *, now: datetime, day: date, midnight: datetime
) -> SlowInputs:
    """Read the day's peak loads (the served snapshot's windowed figures come from the
    city state in memory, `Fleet.windowed`, which `fetch_slow` defines)."""
    cur = await conn.execute(PEAKS_SQL, {"midnight": midnight, "now": now})
    peaks = {row[0]: float(row[1]) for row in await cur.fetchall()}
    return SlowInputs(day=day, peaks=peaks)


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
