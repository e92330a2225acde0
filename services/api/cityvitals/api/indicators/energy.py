"""Energy 能源: load, consumption, peak, CO₂, adjustable load, power quality, key consumers."""

from __future__ import annotations

from cityvitals.api.indicators.base import ScopeView, computes, ratio


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
