"""Energy 能源: load, consumption, peak, CO₂, adjustable load, power quality, key consumers."""

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
    computes,
    ge_clear,
    newer,
    ratio,
    threshold_for,
)
from cityvitals.api.indicators.db import EntityThresholds
from cityvitals.catalogue import STALE_INTERVALS, Status

if TYPE_CHECKING:
    from cityvitals.api.compute import Builder


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
class SiteLoadRow:
    """One energy site's live load against its contracted capacity."""

    district: str | None
    site: str
    load_kw: float | None
    contract_kw: float | None
    newest: datetime | None


METERS_SQL = sql.SQL(
    "WITH {dev} "
    "SELECT dev.device_id, dev.district, dev.site, dev.name, dev.iv, dev.online, "
    "dev.key_consumer, dev.contract_kw, l.ts, l.active_power_kw, l.voltage_v, "
    "l.power_factor, l.adjustable_kw, e.consumption_kwh "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "LEFT JOIN energy_daily e ON e.device_id = dev.device_id AND e.day = %(day)s "
    "WHERE dev.kind = 'energy' {only}"
)

ENERGY_TOTALS_SQL = sql.SQL(
    "WITH {dev}, "
    "m AS (SELECT dev.district, dev.iv, dev.online, dev.key_consumer, "
    "dev.online AND l.ts IS NOT NULL AS rep, l.ts, l.active_power_kw, l.voltage_v, "
    "l.power_factor, l.adjustable_kw, e.consumption_kwh "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "LEFT JOIN energy_daily e ON e.device_id = dev.device_id AND e.day = %(day)s "
    "WHERE dev.kind = 'energy') "
    "SELECT district, 'energy' AS kind, count(*) AS registered, "
    "count(*) FILTER (WHERE online) AS online, count(*) FILTER (WHERE rep) AS reporting, "
    "max(ts) FILTER (WHERE rep) AS newest, max(iv) AS max_iv, 0 AS low_battery, 0 AS bins, "
    "0.0::float8 AS fill_sum, 0 AS huts_full, 0 AS gas_alarms, 0 AS fire_risk, "
    "0 AS seepage, 0 AS dropoffs, "
    "coalesce(sum(active_power_kw) FILTER (WHERE rep), 0)::float8 AS load_kw, "
    "coalesce(sum(adjustable_kw) FILTER (WHERE rep), 0)::float8 AS adjustable_kw, "
    "coalesce(sum(consumption_kwh) FILTER (WHERE rep), 0)::float8 AS consumption_kwh, "
    "count(*) FILTER (WHERE rep AND {low_pf}) AS low_pf, "
    "count(*) FILTER (WHERE rep AND NOT (voltage_v BETWEEN %(v_low)s::float8 "
    "AND %(v_high)s::float8)) AS voltage_dev, "
    "count(*) FILTER (WHERE key_consumer) AS key_registered, "
    "count(*) FILTER (WHERE key_consumer AND online) AS key_online, "
    "0 AS occupied, 0 AS lots_near_full "
    "FROM m GROUP BY district"
)

SITE_LOADS_SQL = sql.SQL(
    "WITH {dev}, "
    "s AS (SELECT dev.district, coalesce(dev.site, dev.device_id) AS site, "
    "sum(l.active_power_kw) FILTER (WHERE dev.online AND l.ts IS NOT NULL) AS load_kw, "
    "sum(dev.contract_kw) FILTER (WHERE dev.contract_kw <> 0) AS contract_kw, "
    "max(l.ts) FILTER (WHERE dev.online AND l.ts IS NOT NULL) AS newest "
    "FROM dev LEFT JOIN latest_energy l ON l.device_id = dev.device_id "
    "WHERE dev.kind = 'energy' GROUP BY 1, 2) "
    "SELECT district, site, load_kw, nullif(contract_kw, 0) AS contract_kw, newest FROM s "
    "WHERE load_kw IS NOT NULL AND coalesce(contract_kw, 0) <> 0 "
    "AND ({share} OR {active})"
)

PEAKS_SQL = (
    "SELECT scope, max(value) FROM indicator_samples WHERE indicator = 'energy.load_kw' "
    "AND ts >= %(midnight)s AND ts <= %(now)s AND value IS NOT NULL GROUP BY scope"
)


def energy_params(params: dict[str, Any], th: EntityThresholds) -> dict[str, Any]:
    """The parameters of `ENERGY_TOTALS_SQL`."""
    return params | {"v_low": th.voltage_low, "v_high": th.voltage_high}


def _meters(s: ScopeView, value: float) -> float | None:
    return value if s.acc.reporting["energy"] else None


@computes("energy.load_kw")
def load_kw(s: ScopeView) -> float | None:
    """Σ latest active power of the reporting meters."""
    return _meters(s, s.acc.load_kw)


@computes("energy.consumption_kwh_today")
def consumption_kwh_today(s: ScopeView) -> float | None:
    """Σ today's consumption of the reporting meters."""
    return _meters(s, s.acc.consumption_kwh)


@computes("energy.peak_load_kw_today")
def peak_load_kw_today(s: ScopeView) -> float | None:
    """Max of today's sampled load and of the current load."""
    current = load_kw(s)
    stored = (s.slow.peaks or {}).get(s.id)
    if current is None:
        return stored
    return current if stored is None else max(stored, current)


@computes("energy.co2_t_today")
def co2_t_today(s: ScopeView) -> float | None:
    """Today's consumption x the grid emission factor, in tonnes."""
    return _meters(s, s.acc.consumption_kwh * s.co2_kg_per_kwh / 1000.0)


@computes("energy.adjustable_kw")
def adjustable_kw(s: ScopeView) -> float | None:
    """Σ latest adjustable load of the reporting meters."""
    return _meters(s, s.acc.adjustable_kw)


@computes("energy.low_power_factor")
def low_power_factor(s: ScopeView) -> float | None:
    """Meters under the power-factor threshold."""
    return _meters(s, float(s.acc.low_pf))


@computes("energy.voltage_deviation")
def voltage_deviation(s: ScopeView) -> float | None:
    """Meters outside the voltage band."""
    return _meters(s, float(s.acc.voltage_dev))


@computes("energy.key_consumer_monitoring_rate")
def key_consumer_monitoring_rate(s: ScopeView) -> float | None:
    """Online key-consumer meters ÷ registered ones."""
    return ratio(s.acc.key_online, s.acc.key_registered)


# -- entity by entity (a district's drill-down; flagged entities in the city snapshot)


def add_meters(b: Builder, rows: Iterable[MeterRow]) -> None:
    """Every energy meter: sums, per-meter checks, energy sites."""
    sites: dict[tuple[str | None, str], list[MeterRow]] = {}
    for r in rows:
        reporting = r.online and r.ts is not None
        scopes = b.scopes(r.district)
        sites.setdefault((r.district, r.site or r.device_id), []).append(r)
        for acc in scopes:
            acc.device("energy", online=r.online, reporting=reporting, iv=r.iv)
            if r.key_consumer:
                acc.key_registered += 1
                acc.key_online += r.online
        if not reporting:
            continue
        low_pf = b.th_pf.status(r.power_factor) > Status.NORMAL
        volt = b.voltage_out(r.voltage_v)
        for acc in scopes:
            acc.seen("energy", r.ts)
            acc.load_kw += r.active_power_kw or 0.0
            acc.adjustable_kw += r.adjustable_kw or 0.0
            acc.consumption_kwh += r.consumption_kwh or 0.0
            acc.low_pf += low_pf
            acc.voltage_dev += volt
        meter_checks(b, r)
    for (district, site_id), meters in sites.items():
        energy_site(b, district, site_id, meters)


def meter_checks(b: Builder, r: MeterRow) -> None:
    """The reporting meter's power factor and voltage checks."""
    volt = b.voltage_out(r.voltage_v)
    b.against("energy.low_power_factor", r.device_id, r.district, r.power_factor, b.th_pf, r.ts)
    v = r.voltage_v
    low, high = b.th.voltage_low, b.th.voltage_high
    margin_low = low * (1 + HYSTERESIS_MARGIN)
    margin_high = high * (1 - HYSTERESIS_MARGIN)
    b.check(
        "energy.voltage_deviation",
        r.device_id,
        r.district,
        Status.WARNING if volt else Status.NORMAL,
        v,
        (low if v is not None and v < low else high),
        v is None or margin_low <= v <= margin_high,
        r.ts,
    )


def energy_site(b: Builder, district: str | None, site_id: str, meters: list[MeterRow]) -> None:
    """One energy site (the meters of one `site`) as a site of its drill-down."""
    ind = "energy.load_kw"
    live = [m for m in meters if m.online and m.ts is not None]
    newest: datetime | None = None
    for m in live:
        newest = newer(newest, m.ts)
    load = sum(m.active_power_kw or 0.0 for m in live) if live else None
    used = sum(m.consumption_kwh or 0.0 for m in live) if live else None
    contract = sum(m.contract_kw for m in meters if m.contract_kw) or None
    share = load_check(b, district, site_id, load, contract, newest)
    status = max(b.own_status(ind, load), b.th_load.status(share))
    worst_meter = Status.NORMAL
    for m in live:
        worst_meter = max(worst_meter, b.th_pf.status(m.power_factor))
        if b.voltage_out(m.voltage_v):
            worst_meter = max(worst_meter, Status.WARNING)
    coverage = len(live) / len(meters)
    stale_after = float(STALE_INTERVALS * max(m.iv for m in meters))
    used_status = b.own_status("energy.consumption_kwh_today", used)
    figures = (
        Figure(ind, load, status, coverage, newest, stale_after),
        Figure("energy.consumption_kwh_today", used, used_status, coverage, newest, stale_after),
    )
    if b.with_sites and district in b.sites:
        name = meters[0].site or meters[0].name or site_id
        b.sites[district].append(
            Site(
                site_id,
                "energy_site",
                name,
                district,
                max(status, used_status, worst_meter),
                figures,
            )
        )


def load_check(
    b: Builder,
    district: str | None,
    site_id: str,
    load: float | None,
    contract: float | None,
    newest: datetime | None,
) -> float | None:
    """A site's live load against its contracted capacity; the share."""
    share = load / contract if load is not None and contract else None
    if contract is not None and share is not None:
        st = b.th_load.status(share)
        bound = threshold_for(b.th_load, st)
        b.check(
            "energy.load_kw",
            f"{district or 'unassigned'}/{site_id}",
            district,
            st,
            load,
            bound * contract if bound is not None else None,
            ge_clear(share, b.th_load),
            newest,
            counted=False,
        )
    return share
