"""Waste 垃圾厢房: fill, full huts, gas, fire, seepage, drop-offs, deposited weight."""

from __future__ import annotations

from cityvitals.api.indicators.base import ScopeView, breaks_down, computes


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
