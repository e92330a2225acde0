"""Waste 垃圾厢房: fill, full huts, gas, fire, seepage, drop-offs, deposited weight."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql

from cityvitals.api.indicators.base import (
    HYSTERESIS_MARGIN,
    Figure,
    ScopeView,
    Site,
    breaks_down,
    computes,
    ge_clear,
    threshold_for,
)
from cityvitals.api.indicators.db import DEVICES_CTE, EntityThresholds
from cityvitals.catalogue import STALE_INTERVALS, Status

if TYPE_CHECKING:
    from cityvitals.api.compute import Builder


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


# `{ids}`: nothing, or a filter of the drop-offs and deposits on `%(ids)s` (a few
# devices read by key, without aggregating every hut's day).
HUTS_SQL = sql.SQL(
    "WITH {dev}, "
    "dropoffs AS (SELECT device_id, count(*) AS n FROM events "
    "WHERE type = 'off_hours_dropoff' AND ts >= %(midnight)s AND ts < %(next_midnight)s {ids} "
    "GROUP BY device_id), "
    "deposited AS (SELECT device_id, jsonb_object_agg(category, deposited_kg) AS kg "
    "FROM waste_daily WHERE day = %(day)s {ids} GROUP BY device_id) "
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

WASTE_TOTALS_SQL = sql.SQL(
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
    "SELECT district, 'waste' AS kind, count(*) AS registered, "
    "count(*) FILTER (WHERE online) AS online, count(*) FILTER (WHERE rep) AS reporting, "
    "max(ts) FILTER (WHERE rep) AS newest, max(iv) AS max_iv, "
    "count(*) FILTER (WHERE rep AND battery_v < %(low)s::float8) AS low_battery, "
    "coalesce(sum(n_bins) FILTER (WHERE rep), 0)::bigint AS bins, "
    "coalesce(sum(coalesce(fill_mean, 0) * n_bins) FILTER (WHERE rep), 0)::float8 "
    "AS fill_sum, "
    "count(*) FILTER (WHERE rep AND {full}) AS huts_full, "
    "count(*) FILTER (WHERE rep AND (h2s_ppm >= %(gas_h2s)s::float8 "
    "OR nh3_ppm >= %(gas_nh3)s::float8 OR ch4_pct_lel >= %(gas_ch4)s::float8)) AS gas_alarms, "
    "count(*) FILTER (WHERE rep AND {fire}) AS fire_risk, "
    "count(*) FILTER (WHERE rep AND seepage) AS seepage, "
    "coalesce(sum(n_drop) FILTER (WHERE rep), 0)::bigint AS dropoffs, "
    "0.0::float8 AS load_kw, 0.0::float8 AS adjustable_kw, 0.0::float8 AS consumption_kwh, "
    "0 AS low_pf, 0 AS voltage_dev, 0 AS key_registered, 0 AS key_online, "
    "0 AS occupied, 0 AS lots_near_full "
    "FROM h GROUP BY district"
)

DEPOSITED_SQL = sql.SQL(
    "WITH {dev} SELECT dev.district, w.category, sum(w.deposited_kg)::float8 FROM dev "
    "JOIN latest_waste l ON l.device_id = dev.device_id "
    "JOIN waste_daily w ON w.device_id = dev.device_id AND w.day = %(day)s "
    "WHERE dev.kind = 'waste' AND dev.online GROUP BY dev.district, w.category"
).format(dev=DEVICES_CTE)


def waste_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    """The parameters of `HUTS_SQL` and `WASTE_TOTALS_SQL`."""
    return params | {
        "low": th.low_battery_v.get("waste"),
        "gas_h2s": th.gas_warning["h2s_ppm"],
        "gas_nh3": th.gas_warning["nh3_ppm"],
        "gas_ch4": th.gas_warning["ch4_pct_lel"],
    }


def _huts(s: ScopeView, count: int) -> float | None:
    return float(count) if s.acc.reporting["waste"] else None


@computes("waste.fill_pct_mean")
def fill_pct_mean(s: ScopeView) -> float | None:
    """Mean fill over every bin of the reporting huts."""
    return s.acc.fill_sum / s.acc.bins if s.acc.reporting["waste"] and s.acc.bins else None


@computes("waste.huts_full")
def huts_full(s: ScopeView) -> float | None:
    """Huts whose fullest bin is past the lowest per-hut bound."""
    return _huts(s, s.acc.huts_full)


@computes("waste.gas_alarms")
def gas_alarms(s: ScopeView) -> float | None:
    """Huts at or over a gas's warning limit."""
    return _huts(s, s.acc.gas_alarms)


@computes("waste.fire_risk")
def fire_risk(s: ScopeView) -> float | None:
    """Huts at or over the fire temperature."""
    return _huts(s, s.acc.fire_risk)


@computes("waste.seepage")
def seepage(s: ScopeView) -> float | None:
    """Huts reporting seepage."""
    return _huts(s, s.acc.seepage)


@computes("waste.offhours_dropoffs_today")
def offhours_dropoffs_today(s: ScopeView) -> float | None:
    """Off-hours drop-off events of the local day."""
    return _huts(s, s.acc.dropoffs)


@computes("waste.deposited_kg_today")
def deposited_kg_today(s: ScopeView) -> float | None:
    """Weight deposited today, every category."""
    return sum(s.acc.deposited.values()) if s.acc.reporting["waste"] else None


@breaks_down("waste.deposited_kg_today")
def deposited_by_category(s: ScopeView, value: float | None) -> dict[str, float | None] | None:
    """Weight deposited today per category."""
    if value is None:
        return None
    return {c: s.acc.deposited.get(c, 0.0) for c in s.acc.deposited}


# -- entity by entity (a district's drill-down; flagged entities in the city snapshot)


def add_huts(b: Builder, rows: Iterable[HutRow]) -> None:
    """Every waste hut: sums, per-hut checks, huts as sites."""
    for r in rows:
        reporting = r.online and r.ts is not None
        scopes = b.scopes(r.district)
        for acc in scopes:
            acc.device("waste", online=r.online, reporting=reporting, iv=r.iv)
        if not reporting:
            hut_site(b, r, reporting=False, entity_status=Status.NORMAL)
            continue
        for acc in scopes:
            acc.seen("waste", r.ts)
            acc.bins += r.n_bins
            acc.fill_sum += (r.fill_mean or 0.0) * r.n_bins
            acc.low_battery += r.low_battery
            acc.dropoffs += r.dropoffs_today
            for cat, kg in r.deposited_kg.items():
                acc.deposited[cat] = acc.deposited.get(cat, 0.0) + kg
            # Counted from the lowest bound of the per-hut thresholds, the same
            # thresholds that give the hut its status.
            acc.huts_full += b.th_full.status(r.fill_max) > Status.NORMAL
            acc.gas_alarms += any(
                v is not None and v >= b.th.gas_warning[name]
                for name, v in (
                    ("h2s_ppm", r.h2s_ppm),
                    ("nh3_ppm", r.nh3_ppm),
                    ("ch4_pct_lel", r.ch4_pct_lel),
                )
            )
            acc.fire_risk += b.th_fire.status(r.temp_c) > Status.NORMAL
            acc.seepage += bool(r.seepage)
        worst = hut_checks(b, r)
        hut_site(b, r, reporting=True, entity_status=worst)


def hut_checks(b: Builder, r: HutRow) -> Status:
    """The reporting hut's checks; its worst status."""
    worst = b.against("waste.huts_full", r.device_id, r.district, r.fill_max, b.th_full, r.ts)
    gases = {"h2s_ppm": r.h2s_ppm, "nh3_ppm": r.nh3_ppm, "ch4_pct_lel": r.ch4_pct_lel}
    warn, crit = b.th.gas_warning, b.th.gas_critical
    gas_status, gas_value, gas_bound = Status.NORMAL, None, None
    gas_clear = True
    for name, v in gases.items():
        if v is None:
            continue
        if v >= warn[name] * (1 - HYSTERESIS_MARGIN):
            gas_clear = False
        st_g = (
            Status.CRITICAL
            if v >= crit[name]
            else Status.WARNING
            if v >= warn[name]
            else Status.NORMAL
        )
        if st_g > gas_status or gas_value is None:
            gas_status, gas_value = st_g, v
            gas_bound = crit[name] if st_g == Status.CRITICAL else warn[name]
    b.check(
        "waste.gas_alarms",
        r.device_id,
        r.district,
        gas_status,
        gas_value,
        gas_bound,
        gas_clear,
        r.ts,
    )
    st_fire = b.against("waste.fire_risk", r.device_id, r.district, r.temp_c, b.th_fire, r.ts)
    st_seep = Status.ATTENTION if r.seepage else Status.NORMAL
    b.check(
        "waste.seepage",
        r.device_id,
        r.district,
        st_seep,
        1.0 if r.seepage else 0.0,
        1.0,
        not r.seepage,
        r.ts,
    )
    return max(worst, gas_status, st_fire, st_seep)


def fill_check(b: Builder, r: HutRow, *, reporting: bool) -> tuple[float | None, Status]:
    """The hut's mean fill as a site figure, checked against its thresholds."""
    fill_ind = "waste.fill_pct_mean"
    fill = r.fill_mean if reporting and r.n_bins else None
    fill_status = b.own_status(fill_ind, fill)
    th = b.cfg.catalogue[fill_ind].thresholds
    if th is not None and fill is not None:
        b.check(
            fill_ind,
            r.device_id,
            r.district,
            fill_status,
            fill,
            threshold_for(th, fill_status),
            ge_clear(fill, th),
            r.ts,
            counted=False,
        )
    return fill, fill_status


def hut_site(b: Builder, r: HutRow, *, reporting: bool, entity_status: Status) -> None:
    """One hut as a site of its district's drill-down."""
    fill_ind = "waste.fill_pct_mean"
    fill, fill_status = fill_check(b, r, reporting=reporting)
    coverage = 1.0 if reporting else 0.0
    stale_after = float(STALE_INTERVALS * r.iv)
    newest = r.ts if reporting else None
    drop_value = float(r.dropoffs_today) if reporting else None
    drop_status = b.own_status("waste.offhours_dropoffs_today", drop_value)
    figures = (
        Figure(fill_ind, fill, fill_status, coverage, newest, stale_after),
        Figure(
            "waste.offhours_dropoffs_today",
            drop_value,
            drop_status,
            coverage,
            newest,
            stale_after,
        ),
    )
    if b.with_sites and r.district in b.sites:
        b.sites[r.district].append(
            Site(
                r.device_id,
                "waste_hut",
                r.name or r.site,
                r.district,
                max(fill_status, drop_status, entity_status),
                figures,
            )
        )
