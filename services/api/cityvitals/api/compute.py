"""From aggregated rows to indicator figures: pure Python, the clock passed in.

`build_snapshot` turns what `queries` read into every indicator of the catalogue at
every level it lists (city, the 16 districts, sites), with status, coverage, data
age and the per-entity checks that alerts are made of. It does no I/O, so tests
feed it rows and a `now` and check hand-computed figures. What belongs to one domain
(its rows, its per-entity checks and sites, each indicator's value) is in that
domain's module of `cityvitals.api.indicators`; `Builder` holds the running sums and
checks they add to, and assembles the scopes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, assert_never

from cityvitals.api.indicators import (
    BREAKDOWNS,
    KINDS,
    VALUES,
    Acc,
    ScopeView,
    energy,
    newer,
    parking,
    ratio,
    waste,
)
from cityvitals.api.indicators.base import (
    EntityCheck,
    Figure,
    Site,
    ge_clear,
    threshold_for,
)
from cityvitals.api.indicators.db import EntityThresholds, SlowInputs, Totals
from cityvitals.api.indicators.devices import IngestRow
from cityvitals.api.indicators.energy import MeterRow, SiteLoadRow
from cityvitals.api.indicators.parking import LotRow
from cityvitals.api.indicators.waste import HutRow
from cityvitals.api.queries import EntityInputs, FastInputs
from cityvitals.catalogue import (
    DISTRICTS,
    GASES,
    LOAD_ATTENTION_OF_CONTRACT,
    LOAD_WARNING_OF_CONTRACT,
    STALE_INTERVALS,
    Indicator,
    Status,
    Thresholds,
)

__all__ = [
    "CITY",
    "Builder",
    "Config",
    "EntityCheck",
    "Figure",
    "Flagged",
    "FlaggedState",
    "Scope",
    "Site",
    "Snapshot",
    "build_fast_snapshot",
    "build_snapshot",
    "empty_snapshot",
    "entity_thresholds",
    "flagged_checks",
]

CITY = "city"


@dataclass(frozen=True, slots=True)
class Config:
    """What the computation needs from settings."""

    catalogue: Mapping[str, Indicator]
    co2_kg_per_kwh: float = 0.42


@dataclass(frozen=True, slots=True)
class Scope:
    """The city or one district: its figures and worst status."""

    id: str
    status: Status
    figures: tuple[Figure, ...]

    def figure(self, indicator: str) -> Figure:
        """One figure by indicator id."""
        for f in self.figures:
            if f.id == indicator:
                return f
        raise KeyError(indicator)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every figure at one instant."""

    computed_at: datetime
    city: Scope
    districts: dict[str, Scope]
    sites: dict[str, tuple[Site, ...]]
    checks: tuple[EntityCheck, ...]


def _entity(catalogue: Mapping[str, Indicator], ind_id: str) -> Thresholds:
    th = catalogue[ind_id].entity_thresholds
    if th is None:
        raise ValueError(f"{ind_id} has no per-entity thresholds")
    return th


def entity_thresholds(catalogue: Mapping[str, Indicator]) -> EntityThresholds:
    """The per-entity thresholds and limits of a catalogue (defaults or overridden)."""
    gas = catalogue["waste.gas_alarms"]
    volt = catalogue["energy.voltage_deviation"]
    nominal = volt.param("nominal_v")
    battery = catalogue["devices.low_battery"].params
    return EntityThresholds(
        full=_entity(catalogue, "waste.huts_full"),
        fire=_entity(catalogue, "waste.fire_risk"),
        fill=catalogue["waste.fill_pct_mean"].thresholds,
        power_factor=_entity(catalogue, "energy.low_power_factor"),
        # Site load as a fraction of the site's contracted capacity.
        load_share=catalogue["energy.load_kw"].entity_thresholds
        or Thresholds("ge", attention=LOAD_ATTENTION_OF_CONTRACT, warning=LOAD_WARNING_OF_CONTRACT),
        lot_near_full=catalogue["parking.lots_near_full"].param("lot_occupancy"),
        gas_warning={g: gas.param(g) for g in GASES},
        gas_critical={g: gas.param(f"{g}_critical") for g in GASES},
        voltage_low=nominal * (1 - volt.param("below_pct") / 100),
        voltage_high=nominal * (1 + volt.param("above_pct") / 100),
        low_battery_v={k.removesuffix("_v"): v for k, v in battery.items()},
    )


class Builder:
    """Builds one snapshot; one instance per computation.

    Two ways in: `add_lots/add_huts/add_meters` take every entity row by row and also
    build the sites (a district's drill-down); `add_totals` takes sums per district and
    kind, and `add_flagged` only the entities past a threshold or with an active alert
    (the per-second city snapshot, whatever the fleet size: see `cityvitals.api.fleet`).
    """

    def __init__(self, cfg: Config, now: datetime, *, with_sites: bool = True) -> None:
        self.cfg = cfg
        self.now = now
        self.with_sites = with_sites
        self.accs: dict[str | None, Acc] = {}
        self.city = Acc()
        self.sites: dict[str, list[Site]] = {d.id: [] for d in DISTRICTS}
        self.checks: list[EntityCheck] = []
        # Beside each check: whether it rolls up to its scopes' status.
        self.counted: list[bool] = []
        th = self.th = entity_thresholds(cfg.catalogue)
        self.th_full = th.full
        self.th_fire = th.fire
        self.th_pf = th.power_factor
        self.th_load = th.load_share

    def scopes(self, district: str | None) -> tuple[Acc, Acc]:
        """The running sums a device of `district` adds to: its district's and the city's."""
        acc = self.accs.get(district)
        if acc is None:
            acc = self.accs[district] = Acc()
        return acc, self.city

    def voltage_out(self, v: float | None) -> bool:
        """True when a phase voltage is outside the band in force."""
        return v is not None and not (self.th.voltage_low <= v <= self.th.voltage_high)

    def own_status(self, indicator: str, value: float | None) -> Status:
        """The status an indicator's own thresholds give a value."""
        th = self.cfg.catalogue[indicator].thresholds
        return th.status(value) if th else Status.NORMAL

    def check(
        self,
        indicator: str,
        entity: str,
        district: str | None,
        status: Status,
        value: float | None,
        threshold: float | None,
        clear: bool,
        newest: datetime | None,
        *,
        counted: bool = True,
    ) -> None:
        """Record one entity's status; a counted entity's status rolls up to its scopes."""
        self.checks.append(
            EntityCheck(indicator, entity, district, status, value, threshold, clear, newest)
        )
        self.counted.append(counted)
        if counted:
            for acc in self.scopes(district):
                acc.entity(indicator, status)

    def against(
        self,
        indicator: str,
        entity: str,
        district: str | None,
        value: float | None,
        th: Thresholds,
        newest: datetime | None,
    ) -> Status:
        """Check one value against per-entity thresholds; its status."""
        st = th.status(value)
        self.check(
            indicator,
            entity,
            district,
            st,
            value,
            threshold_for(th, st),
            ge_clear(value, th),
            newest,
        )
        return st

    # -- entity by entity, in each domain's module -------------------------------

    def add_lots(self, rows: Iterable[LotRow]) -> None:
        """Every parking lot (and the sensors of no lot), with the lots as sites."""
        parking.add_lots(self, rows)

    def add_huts(self, rows: Iterable[HutRow]) -> None:
        """Every waste hut, checked and built as a site."""
        waste.add_huts(self, rows)

    def add_meters(self, rows: Iterable[MeterRow]) -> None:
        """Every energy meter, checked, with the energy sites."""
        energy.add_meters(self, rows)

    # -- sums from SQL and the flagged entities ----------------------------------

    def add_totals(
        self, rows: Iterable[Totals], deposited: Iterable[tuple[str | None, str, float]]
    ) -> None:
        """Per-district sums of huts and meters (the same rules as `add_huts/add_meters`)."""
        for t in rows:
            kind = t.kind
            for acc in self.scopes(t.district):
                acc.registered[kind] += t.registered
                acc.online[kind] += t.online
                acc.reporting[kind] += t.reporting
                acc.max_iv[kind] = max(acc.max_iv[kind], t.max_iv)
                acc.seen(kind, t.newest)
                acc.low_battery += t.low_battery
                acc.bins += t.bins
                acc.fill_sum += t.fill_sum
                acc.huts_full += t.huts_full
                acc.gas_alarms += t.gas_alarms
                acc.fire_risk += t.fire_risk
                acc.seepage += t.seepage
                acc.dropoffs += t.dropoffs
                acc.load_kw += t.load_kw
                acc.adjustable_kw += t.adjustable_kw
                acc.consumption_kwh += t.consumption_kwh
                acc.low_pf += t.low_pf
                acc.voltage_dev += t.voltage_dev
                acc.key_registered += t.key_registered
                acc.key_online += t.key_online
                acc.occupied += t.occupied
                acc.lots_near_full += t.lots_near_full
        for district, category, kg in deposited:
            for acc in self.scopes(district):
                acc.deposited[category] = acc.deposited.get(category, 0.0) + kg

    def add_flagged(
        self,
        lots: Iterable[LotRow],
        huts: Iterable[HutRow],
        meters: Iterable[MeterRow],
        sites: Iterable[SiteLoadRow],
    ) -> None:
        """Checks of the reporting entities past a threshold or with an active alert."""
        for lot in lots:
            parking.lot_check(self, lot)
        for h in huts:
            waste.hut_checks(self, h)
            waste.fill_check(self, h, reporting=True)
        for m in meters:
            energy.meter_checks(self, m)
        for s in sites:
            energy.load_check(self, s.district, s.site, s.load_kw, s.contract_kw, s.newest)

    # -- scopes ------------------------------------------------------------------

    def scope(
        self,
        scope_id: str,
        acc: Acc,
        *,
        level: str,
        unassigned: int,
        ingest: list[IngestRow],
        slow: SlowInputs,
        slow_keys: tuple[str | None, ...],
    ) -> Scope:
        """All figures of one scope at one level."""
        view = ScopeView(
            scope_id, acc, unassigned, ingest, slow, slow_keys, self.now, self.cfg.co2_kg_per_kwh
        )
        figures = [
            self._figure(ind, view) for ind in self.cfg.catalogue.values() if level in ind.levels
        ]
        status = max((f.status for f in figures), default=Status.NORMAL)
        return Scope(scope_id, status, tuple(figures))

    def _figure(self, ind: Indicator, view: ScopeView) -> Figure:
        """One indicator in one scope: its domain's computation, status, coverage, age."""
        acc = view.acc
        newest: datetime | None = None
        match ind.domain:
            case "parking" | "waste" | "energy" as kind:
                # A domain's figures cover the devices of its kind.
                coverage = ratio(acc.reporting[kind], acc.registered[kind])
                newest = acc.newest[kind]
                stale_after = float(STALE_INTERVALS * acc.max_iv[kind])
            case "devices":
                # Device health covers every kind: online ÷ registered.
                coverage = ratio(sum(acc.online.values()), sum(acc.registered.values()))
                for k in KINDS:
                    newest = newer(newest, acc.newest[k])
                stale_after = float(STALE_INTERVALS * max(acc.max_iv.values()))
            case unreachable:
                assert_never(unreachable)
        value = VALUES[ind.id](view)
        breakdown = BREAKDOWNS.get(ind.id)
        by = breakdown(view, value) if breakdown is not None else None
        status = self.own_status(ind.id, value)
        status = max(status, acc.worst.get(ind.id, Status.NORMAL))
        return Figure(ind.id, value, status, coverage, newest, stale_after, by)


def build_snapshot(rows: EntityInputs, slow: SlowInputs, *, cfg: Config, now: datetime) -> Snapshot:
    """Every indicator for the city, each district and each site, entity by entity."""
    b = Builder(cfg, now)
    b.add_lots(rows.lots)
    b.add_huts(rows.huts)
    b.add_meters(rows.meters)
    return _finish(b, rows.unassigned, rows.ingest, slow)


@dataclass(frozen=True, slots=True)
class Flagged:
    """What the flagged entities add to a snapshot: their checks, and the worst entity
    status per indicator of each scope they roll up to. Kept by the engine and added
    again while those entities have not changed (most refreshes of a large city)."""

    checks: tuple[EntityCheck, ...]
    # district (None: no district) -> indicator -> worst status; and the city's
    worst: dict[str | None, dict[str, Status]]
    city: dict[str, Status]


def flagged_checks(fast: FastInputs, *, cfg: Config, now: datetime) -> Flagged:
    """The checks of `fast`'s flagged lots, huts, meters and energy sites."""
    b = Builder(cfg, now, with_sites=False)
    b.add_flagged(fast.lots, fast.huts, fast.meters, fast.site_loads)
    return Flagged(
        tuple(b.checks), {k: dict(a.worst) for k, a in b.accs.items()}, dict(b.city.worst)
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    row: Any
    checks: tuple[EntityCheck, ...]
    counted: tuple[bool, ...]


class FlaggedState:
    """The flagged entities' checks kept from refresh to refresh: only the entities
    whose row changed are checked again (`flagged_checks` is the same from scratch).

    Huts and meters are the city state's own row objects, the same object while the
    device is unchanged; lots and energy sites are made at each refresh and compared
    by value. Each scope's worst entity status comes from counts of statuses per
    (scope, indicator), moved as entities come, change and go."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Any], _Entry] = {}
        # (district, indicator) -> status -> entities counted there; and the city's
        self._counts: dict[tuple[str | None, str], dict[Status, int]] = {}
        self._city: dict[str, dict[Status, int]] = {}

    def update(
        self, fast: FastInputs, *, cfg: Config, now: datetime
    ) -> tuple[Flagged, list[EntityCheck]]:
        """The flagged part of `fast`, and the checks that are new since the last call."""
        b = Builder(cfg, now, with_sites=False)
        changed: list[EntityCheck] = []
        seen: set[tuple[str, Any]] = set()
        entries = self._entries

        def one(key: tuple[str, Any], row: Any, by_value: bool, check: Any) -> None:
            seen.add(key)
            old = entries.get(key)
            if old is not None and (old.row == row if by_value else old.row is row):
                return
            if old is not None:
                self._move(old, -1)
            b.checks.clear()
            b.counted.clear()
            check(row)
            entry = _Entry(row, tuple(b.checks), tuple(b.counted))
            entries[key] = entry
            self._move(entry, +1)
            changed.extend(entry.checks)

        for lot in fast.lots:
            one(("lot", (lot.district, lot.site)), lot, True, lambda r: parking.lot_check(b, r))
        for h in fast.huts:
            one(("hut", h.device_id), h, False, lambda r: _hut(b, r))
        for m in fast.meters:
            one(("meter", m.device_id), m, False, lambda r: energy.meter_checks(b, r))
        for site in fast.site_loads:
            one(("site", (site.district, site.site)), site, True, lambda r: _site(b, r))
        for key in [k for k in entries if k not in seen]:
            self._move(entries.pop(key), -1)
        worst: dict[str | None, dict[str, Status]] = {}
        for (district, indicator), counts in self._counts.items():
            if (st := _worst(counts)) is not None:
                worst.setdefault(district, {})[indicator] = st
        city = {
            indicator: st
            for indicator, counts in self._city.items()
            if (st := _worst(counts)) is not None
        }
        checks = tuple(c for e in entries.values() for c in e.checks)
        return Flagged(checks, worst, city), changed

    def _move(self, entry: _Entry, sign: int) -> None:
        for c, counted in zip(entry.checks, entry.counted, strict=True):
            if not counted or c.status == Status.NORMAL:
                continue
            for counts in (
                self._counts.setdefault((c.district, c.indicator), {}),
                self._city.setdefault(c.indicator, {}),
            ):
                counts[c.status] = counts.get(c.status, 0) + sign


def _worst(counts: dict[Status, int]) -> Status | None:
    """The worst status some entity has (None: none above normal)."""
    return max((st for st, n in counts.items() if n > 0), default=None)


def _hut(b: Builder, h: HutRow) -> None:
    waste.hut_checks(b, h)
    waste.fill_check(b, h, reporting=True)


def _site(b: Builder, s: SiteLoadRow) -> None:
    energy.load_check(b, s.district, s.site, s.load_kw, s.contract_kw, s.newest)


def build_fast_snapshot(
    fast: FastInputs,
    slow: SlowInputs,
    *,
    cfg: Config,
    now: datetime,
    flagged: Flagged | None = None,
) -> Snapshot:
    """Every indicator for the city and each district from sums and flagged entities;
    no sites (those are built per district on demand with `build_snapshot`).

    `flagged` is the flagged entities' part when it is already known (else it is
    computed from `fast`)."""
    b = Builder(cfg, now, with_sites=False)
    b.add_totals(fast.totals, fast.deposited)
    if flagged is None:
        flagged = flagged_checks(fast, cfg=cfg, now=now)
    b.checks.extend(flagged.checks)
    for district, worst in flagged.worst.items():
        acc, _ = b.scopes(district)
        for indicator, status in worst.items():
            acc.entity(indicator, status)
    for indicator, status in flagged.city.items():
        b.city.entity(indicator, status)
    return _finish(b, fast.unassigned, fast.ingest, slow)


def _finish(b: Builder, unassigned: int, ingest: list[IngestRow], slow: SlowInputs) -> Snapshot:
    districts: dict[str, Scope] = {}
    for d in DISTRICTS:
        acc = b.accs.get(d.id) or Acc()
        districts[d.id] = b.scope(
            d.id,
            acc,
            level="district",
            unassigned=0,
            ingest=ingest,
            slow=slow,
            slow_keys=(d.id,),
        )
    # The city counts every device in scope: those of the 16 districts, those without a
    # district and those in a district the catalogue does not know.
    city_keys: tuple[str | None, ...] = tuple(
        dict.fromkeys(
            (
                *(d.id for d in DISTRICTS),
                None,
                *b.accs,
                *(slow.transitions or {}),
                *(slow.completeness or {}),
            )
        )
    )
    city = b.scope(
        CITY,
        b.city,
        level="city",
        unassigned=unassigned,
        ingest=ingest,
        slow=slow,
        slow_keys=city_keys,
    )
    # The city's status is the worst of its districts' and of its own figures' (the
    # city-only ones included): a critical hut without a district makes it critical.
    worst = max((city.status, *(s.status for s in districts.values())))
    city = Scope(CITY, worst, city.figures)
    sites = {d: tuple(sorted(ss, key=lambda s: (s.kind, s.id))) for d, ss in b.sites.items()}
    return Snapshot(b.now, city, districts, sites, tuple(b.checks))


def empty_snapshot(cfg: Config, now: datetime) -> Snapshot:
    """A snapshot with no data: every value null, served until the database answers."""
    return build_snapshot(
        EntityInputs(lots=[], huts=[], meters=[], unassigned=0, ingest=[]),
        SlowInputs(),
        cfg=cfg,
        now=now,
    )
