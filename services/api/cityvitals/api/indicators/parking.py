"""Parking 停车: occupancy, free spaces, lots near full, turnover."""

from __future__ import annotations

from collections.abc import Iterable
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
    ratio,
    threshold_for,
)
from cityvitals.api.indicators.db import DEVICES_CTE, EntityThresholds
from cityvitals.catalogue import STALE_INTERVALS, Status

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
    occ_ind = "parking.occupancy_ratio"
    for r in rows:
        for acc in b.scopes(r.district):
            acc.registered["parking"] += r.registered
            acc.online["parking"] += r.online
            acc.reporting["parking"] += r.reporting
            acc.occupied += r.occupied
            acc.low_battery += r.low_battery
            acc.max_iv["parking"] = max(acc.max_iv["parking"], r.max_iv)
            acc.seen("parking", r.newest)
        if r.site is None:
            continue
        occupancy = ratio(r.occupied, r.reporting)
        if occupancy is not None and occupancy >= b.th.lot_near_full:
            for acc in b.scopes(r.district):
                acc.lots_near_full += 1
        coverage = ratio(r.reporting, r.registered)
        stale_after = float(STALE_INTERVALS * r.max_iv)
        occ_status = b.own_status(occ_ind, occupancy)
        th = b.cfg.catalogue[occ_ind].thresholds
        if th is not None and occupancy is not None:
            b.check(
                occ_ind,
                f"{r.district or 'unassigned'}/{r.site}",
                r.district,
                occ_status,
                occupancy,
                threshold_for(th, occ_status),
                ge_clear(occupancy, th),
                r.newest,
                counted=False,
            )
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
        if b.with_sites and r.district in b.sites:
            b.sites[r.district].append(
                Site(r.site, "parking_lot", r.site, r.district, max(occ_status, free), figures)
            )
