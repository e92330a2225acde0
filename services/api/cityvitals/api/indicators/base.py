"""What a domain's computations are given, and the registry of them by catalogue id.

Each domain module (`parking`, `waste`, `energy`, `devices`) registers, with
`@computes(id)`, the function that turns one scope's sums into an indicator's value,
and with `@breaks_down(id)` the function that gives its `by` breakdown. The package
checks at import that every catalogue id has a computation, in the module of its domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from cityvitals.api.indicators.db import SlowInputs
from cityvitals.catalogue import BY_ID, REPORT_INTERVAL_S, STALE_COVERAGE, Status, Thresholds
from cityvitals.payloads import CATEGORIES

if TYPE_CHECKING:
    from cityvitals.api.indicators.devices import IngestRow

KINDS = ("parking", "waste", "energy")
# An alert clears as soon as its value is back past the lowest threshold by this
# fraction of that threshold (or after two consecutive normal readings).
HYSTERESIS_MARGIN = 0.05


def newer(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two optional instants."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def ratio(num: float, den: float) -> float | None:
    """num ÷ den, or None when there is nothing to divide by."""
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class Figure:
    """One indicator's value in one scope (city, district or site)."""

    id: str
    value: float | None
    status: Status
    coverage: float | None
    newest: datetime | None
    stale_after_s: float
    by: dict[str, float | None] | None = None

    def data_age_s(self, now: datetime) -> float | None:
        """Seconds since the newest reading behind the figure (never negative)."""
        if self.newest is None:
            return None
        return max(0.0, (now - self.newest).total_seconds())

    def stale(self, now: datetime) -> bool:
        """True when coverage is short, the data is old, or there is none."""
        age = self.data_age_s(now)
        return (
            self.value is None
            or self.coverage is None
            or self.coverage < STALE_COVERAGE
            or age is None
            or age > self.stale_after_s
        )


@dataclass(frozen=True, slots=True)
class Site:
    """A parking lot, a waste hut or an energy site, with its own figures."""

    id: str
    kind: str  # parking_lot | waste_hut | energy_site
    name: str | None
    district: str | None
    status: Status
    figures: tuple[Figure, ...]


@dataclass(frozen=True, slots=True)
class EntityCheck:
    """One entity (hut, meter, lot, site) against one indicator's per-entity thresholds."""

    indicator: str
    entity: str
    district: str | None
    status: Status
    value: float | None
    threshold: float | None
    # True when the value is back past the lowest threshold by the hysteresis margin.
    clear: bool
    newest: datetime | None


def ge_clear(value: float | None, th: Thresholds) -> bool:
    """True when a value is below the lowest `ge` bound by the hysteresis margin."""
    bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None]
    if value is None or not bounds:
        return True
    low = min(bounds)
    if th.direction == "lt":
        high = max(bounds)
        return value >= high + abs(high) * HYSTERESIS_MARGIN
    return value < low - abs(low) * HYSTERESIS_MARGIN


def threshold_for(th: Thresholds, status: Status) -> float | None:
    """The bound an entity's status was judged by (for normal: the lowest bound)."""
    if status == Status.NORMAL:
        bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None]
        if not bounds:
            return None
        return max(bounds) if th.direction == "lt" else min(bounds)
    return th.bound(status)


@dataclass
class Acc:
    """Running sums for one scope (a district, the unassigned devices or the city)."""

    registered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    online: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    reporting: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    newest: dict[str, datetime | None] = field(default_factory=lambda: dict.fromkeys(KINDS))
    max_iv: dict[str, int] = field(default_factory=lambda: dict(REPORT_INTERVAL_S))
    low_battery: int = 0
    occupied: int = 0
    lots_near_full: int = 0
    bins: int = 0
    fill_sum: float = 0.0
    huts_full: int = 0
    gas_alarms: int = 0
    fire_risk: int = 0
    seepage: int = 0
    dropoffs: int = 0
    deposited: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    load_kw: float = 0.0
    adjustable_kw: float = 0.0
    consumption_kwh: float = 0.0
    low_pf: int = 0
    voltage_dev: int = 0
    key_registered: int = 0
    key_online: int = 0
    # indicator id -> worst per-entity status in this scope
    worst: dict[str, Status] = field(default_factory=dict)

    def device(self, kind: str, *, online: bool, reporting: bool, iv: int) -> None:
        """Count one registered device of a kind."""
        self.registered[kind] += 1
        self.online[kind] += online
        self.reporting[kind] += reporting
        self.max_iv[kind] = max(self.max_iv[kind], iv)

    def seen(self, kind: str, ts: datetime | None) -> None:
        """Note the time of a reading used."""
        self.newest[kind] = newer(self.newest[kind], ts)

    def entity(self, indicator: str, status: Status) -> None:
        """Note one counted entity's status."""
        if status > self.worst.get(indicator, Status.NORMAL):
            self.worst[indicator] = status


@dataclass(frozen=True, slots=True)
class ScopeView:
    """One scope (the city or a district) as a computation sees it."""

    id: str
    acc: Acc
    # Auto-registered devices without a district (the city's figure; 0 for districts).
    unassigned: int
    ingest: list[IngestRow]
    slow: SlowInputs
    # The keys of the slow figures (districts, None for no district) in this scope.
    slow_keys: tuple[str | None, ...]
    now: datetime
    co2_kg_per_kwh: float


Value = Callable[[ScopeView], float | None]
Breakdown = Callable[[ScopeView, float | None], dict[str, float | None] | None]
VALUES: dict[str, Value] = {}
BREAKDOWNS: dict[str, Breakdown] = {}


F = TypeVar("F", Value, Breakdown)


def _register(registry: dict[str, F], ind_id: str, fn: F) -> None:
    ind = BY_ID.get(ind_id)
    if ind is None:
        raise ValueError(f"{fn.__module__}.{fn.__name__} computes {ind_id!r}, not in the catalogue")
    if fn.__module__.rsplit(".", 1)[-1] != ind.domain:
        raise ValueError(f"{ind_id} belongs in the {ind.domain} module, not {fn.__module__}")
    if ind_id in registry:
        raise ValueError(f"{ind_id} is computed twice")
    registry[ind_id] = fn


def computes(ind_id: str) -> Callable[[Value], Value]:
    """Register the function that computes one indicator's value in a scope."""

    def register(fn: Value) -> Value:
        _register(VALUES, ind_id, fn)
        return fn

    return register


def breaks_down(ind_id: str) -> Callable[[Breakdown], Breakdown]:
    """Register the function that gives one indicator's `by` breakdown in a scope."""

    def register(fn: Breakdown) -> Breakdown:
        _register(BREAKDOWNS, ind_id, fn)
        return fn

    return register
