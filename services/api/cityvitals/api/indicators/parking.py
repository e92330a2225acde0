"""Parking 停车: occupancy, free spaces, lots near full, turnover."""

from __future__ import annotations

from cityvitals.api.indicators.base import ScopeView, computes, ratio


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
