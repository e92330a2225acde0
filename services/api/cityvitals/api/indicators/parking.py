"""Parking 停车: occupancy, free spaces, lots near full, turnover."""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql

from cityvitals.api.indicators.base import (
    Figure,
    ScopeView,
    Site,
    computes,
    ge_clear,
    newer,
    ratio,
    threshold_for,
)
from cityvitals.api.indicators.db import DEVICES_CTE, EntityThresholds, Totals
from cityvitals.catalogue import STALE_INTERVALS, Status, Thresholds

if TYPE_CHECKING:
    from cityvitals.api.compute import Builder


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


LOTS_SQL = sql.SQL(
    "WITH {dev} SELECT dev.district, dev.site, count(*) AS registered, "
    "count(*) FILTER (WHERE dev.online) AS online, "
    "count(l.device_id) FILTER (WHERE dev.online) AS reporting, "
    "count(*) FILTER (WHERE dev.online AND l.occupied) AS occupied, "
    "count(*) FILTER (WHERE dev.online AND l.battery_v < %(low)s::float8) AS low_battery, "
    "max(l.ts) FILTER (WHERE dev.online) AS newest, max(dev.iv) AS max_iv "
    "FROM dev LEFT JOIN latest_parking l ON l.device_id = dev.device_id "
    "WHERE dev.kind = 'parking' {only} GROUP BY dev.district, dev.site"
)

TRANSITIONS_SQL = sql.SQL(
    "WITH {dev}, "
    "t AS (SELECT device_id, sum(transitions) AS n FROM parking_hourly "
    "WHERE hour > %(since)s AND hour <= %(now)s GROUP BY device_id) "
    "SELECT dev.district, coalesce(sum(t.n), 0)::bigint FROM dev "
    "JOIN t ON t.device_id = dev.device_id "
    "WHERE dev.kind = 'parking' AND dev.online GROUP BY dev.district"
).format(dev=DEVICES_CTE)


def lot_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    """The parameters of `LOTS_SQL`."""
    return params | {"low": th.low_battery_v.get("parking")}


@computes("parking.occupancy_ratio")
def occupancy_ratio(s: ScopeView) -> float | None:
    """Occupied ÷ reporting sensors."""
    return ratio(s.acc.occupied, s.acc.reporting["parking"])


@computes("parking.free_spaces")
def free_spaces(s: ScopeView) -> float | None:
    """Reporting sensors whose latest reading is free."""
    p = s.acc.reporting["parking"]
    return float(p - s.acc.occupied) if p else None


@computes("parking.lots_near_full")
def lots_near_full(s: ScopeView) -> float | None:
    """Lots whose occupancy is at or over the near-full limit."""
    return float(s.acc.lots_near_full) if s.acc.reporting["parking"] else None


@computes("parking.turnover_24h")
def turnover_24h(s: ScopeView) -> float | None:
    """Free→occupied transitions of the last 24 h ÷ reporting sensors."""
    p = s.acc.reporting["parking"]
    if not p or s.slow.transitions is None:
        return None
    moves = sum(s.slow.transitions.get(k, 0) for k in s.slow_keys)
    return moves / p


# -- entity by entity (a district's drill-down; flagged entities in the city snapshot)


def add_lots(b: Builder, rows: Iterable[LotRow]) -> None:
    """Every parking lot (and the sensors of no lot): sums, lot checks, lots as sites."""
    for r in rows:
        add_lot_sums(b, r)
        lot_check(b, r)


def add_lot_sums(b: Builder, r: LotRow) -> None:
    """One lot's sensors in its district's and the city's sums (and near-full count)."""
    for acc in b.scopes(r.district):
        acc.registered["parking"] += r.registered
        acc.online["parking"] += r.online
        acc.reporting["parking"] += r.reporting
        acc.occupied += r.occupied
        acc.low_battery += r.low_battery
        acc.max_iv["parking"] = max(acc.max_iv["parking"], r.max_iv)
        acc.seen("parking", r.newest)
    if near_full(r, b.th):
        for acc in b.scopes(r.district):
            acc.lots_near_full += 1


def near_full(r: LotRow, th: EntityThresholds) -> bool:
    """A lot (not the sensors of no lot) at or over the near-full occupancy."""
    occupancy = ratio(r.occupied, r.reporting)
    return r.site is not None and occupancy is not None and occupancy >= th.lot_near_full


def flagged(r: LotRow, occupancy_th: Thresholds | None, alerted: Container[str]) -> bool:
    """A lot whose check alerts act on: past a bound, or with an active alert."""
    if r.site is None or occupancy_th is None:
        return False
    occupancy = ratio(r.occupied, r.reporting)
    if occupancy is None:
        return False
    return occupancy_th.status(occupancy) != Status.NORMAL or lot_entity(r) in alerted


def lot_entity(r: LotRow) -> str:
    """The entity a lot's alerts are about."""
    return f"{r.district or 'unassigned'}/{r.site}"


def district_totals(rows: Iterable[LotRow], th: EntityThresholds) -> list[Totals]:
    """The lots' sums per district, as the per-second snapshot takes them."""
    sums: dict[str | None, list[Any]] = {}
    for r in rows:
        t = sums.setdefault(r.district, [0, 0, 0, 0, 0, None, 0, 0])
        t[0] += r.registered
        t[1] += r.online
        t[2] += r.reporting
        t[3] += r.occupied
        t[4] += r.low_battery
        t[5] = newer(t[5], r.newest)
        t[6] = max(t[6], r.max_iv)
        t[7] += near_full(r, th)
    return [
        parking_totals(d, registered, online, reporting, occupied, low, newest, iv, full)
        for d, (registered, online, reporting, occupied, low, newest, iv, full) in sums.items()
    ]


def parking_totals(
    district: str | None,
    registered: int,
    online: int,
    reporting: int,
    occupied: int,
    low_battery: int,
    newest: datetime | None,
    max_iv: int,
    lots_near_full: int,
) -> Totals:
    """A district's parking sums in the shape the waste and energy sums take."""
    return Totals(
        district=district,
        kind="parking",
        registered=registered,
        online=online,
        reporting=reporting,
        newest=newest,
        max_iv=max_iv,
        low_battery=low_battery,
        bins=0,
        fill_sum=0.0,
        huts_full=0,
        gas_alarms=0,
        fire_risk=0,
        seepage=0,
        dropoffs=0,
        load_kw=0.0,
        adjustable_kw=0.0,
        consumption_kwh=0.0,
        low_pf=0,
        voltage_dev=0,
        key_registered=0,
        key_online=0,
        occupied=occupied,
        lots_near_full=lots_near_full,
    )


def lot_check(b: Builder, r: LotRow) -> None:
    """One lot's occupancy check, and the lot as a site (when the build has sites)."""
    if r.site is None:
        return
    occ_ind = "parking.occupancy_ratio"
    occupancy = ratio(r.occupied, r.reporting)
    coverage = ratio(r.reporting, r.registered)
    stale_after = float(STALE_INTERVALS * r.max_iv)
    occ_status = b.own_status(occ_ind, occupancy)
    th = b.cfg.catalogue[occ_ind].thresholds
    if th is not None and occupancy is not None:
        b.check(
            occ_ind,
            lot_entity(r),
            r.district,
            occ_status,
            occupancy,
            threshold_for(th, occ_status),
            ge_clear(occupancy, th),
            r.newest,
            counted=False,
        )
    if not (b.with_sites and r.district in b.sites):
        return
    free = b.own_status("parking.free_spaces", r.reporting - r.occupied)
    figures = (
        Figure(occ_ind, occupancy, occ_status, coverage, r.newest, stale_after),
        Figure(
            "parking.free_spaces",
            float(r.reporting - r.occupied) if r.reporting else None,
            free if r.reporting else Status.NORMAL,
            coverage,
            r.newest,
            stale_after,
        ),
    )
    b.sites[r.district].append(
        Site(r.site, "parking_lot", r.site, r.district, max(occ_status, free), figures)
    )
