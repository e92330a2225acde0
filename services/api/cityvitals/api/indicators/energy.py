"""Energy 能源: load, consumption, peak, CO₂, adjustable load, power quality, key consumers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from cityvitals.api.indicators.base import ScopeView, computes, ratio
from cityvitals.api.indicators.db import EntityThresholds


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

SITE_LOADS_SQL = sql.SQL(
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
