"""From aggregated rows to indicator figures: pure Python, the clock passed in.

`build_snapshot` turns what `queries` read into every indicator of the catalogue at
every level it lists (city, the 16 districts, sites), with status, coverage, data
age and the per-entity checks that alerts are made of. It does no I/O, so tests
feed it rows and a `now` and check hand-computed figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cityvitals.api.indicators import BREAKDOWNS, KINDS, VALUES, Acc, ScopeView, newer, ratio
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
    STALE_COVERAGE,
    STALE_INTERVALS,
    Indicator,
    Status,
    Thresholds,
)

CITY = "city"
# An alert clears as soon as its value is back past the lowest threshold by this
# fraction of that threshold (or after two consecutive normal readings).
HYSTERESIS_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class Config:
    """What the computation needs from settings."""

    catalogue: Mapping[str, Indicator]
    co2_kg_per_kwh: float = 0.42


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


def _ge_clear(value: float | None, th: Thresholds) -> bool:
    """True when a value is below the lowest `ge` bound by the hysteresis margin."""
    bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None]
    if value is None or not bounds:
        return True
    low = min(bounds)
    if th.direction == "lt":
        high = max(bounds)
        return value >= high + abs(high) * HYSTERESIS_MARGIN
    return value < low - abs(low) * HYSTERESIS_MARGIN


def _threshold_for(th: Thresholds, status: Status) -> float | None:
    if status == Status.NORMAL:
        bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None]
        if not bounds:
            return None
        return max(bounds) if th.direction == "lt" else min(bounds)
    return th.bound(status)


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
    build the sites (a district's drill-down); `add_totals` takes sums per district
    computed in SQL, and `add_flagged` only the entities past a threshold or with an
    active alert (the per-second city snapshot, whatever the fleet size).
    """

    def __init__(self, cfg: Config, now: datetime, *, with_sites: bool = True) -> None:
        self.cfg = cfg
        self.now = now
        self.with_sites = with_sites
        self.accs: dict[str | None, Acc] = {}
        self.city = Acc()
        self.sites: dict[str, list[Site]] = {d.id: [] for d in DISTRICTS}
        self.checks: list[EntityCheck] = []
        th = self.th = entity_thresholds(cfg.catalogue)
        self.th_full = th.full
        self.th_fire = th.fire
        self.th_pf = th.power_factor
        self.th_load = th.load_share

    def _scopes(self, district: str | None) -> tuple[Acc, Acc]:
        acc = self.accs.get(district)
        if acc is None:
            acc = self.accs[district] = Acc()
        return acc, self.city

    def _voltage_out(self, v: float | None) -> bool:
        return v is not None and not (self.th.voltage_low <= v <= self.th.voltage_high)

    def _own_status(self, indicator: str, value: float | None) -> Status:
        th = self.cfg.catalogue[indicator].thresholds
        return th.status(value) if th else Status.NORMAL

    def _check(
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
        if counted:
            for acc in self._scopes(district):
                acc.entity(indicator, status)

    def _against(
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
        self._check(
            indicator,
            entity,
            district,
            st,
            value,
            _threshold_for(th, st),
            _ge_clear(value, th),
            newest,
        )
        return st

    # -- parking -----------------------------------------------------------------

    def add_lots(self, rows: Iterable[LotRow]) -> None:
        occ_ind = "parking.occupancy_ratio"
        for r in rows:
            for acc in self._scopes(r.district):
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
            if occupancy is not None and occupancy >= self.th.lot_near_full:
                for acc in self._scopes(r.district):
                    acc.lots_near_full += 1
            coverage = ratio(r.reporting, r.registered)
            stale_after = float(STALE_INTERVALS * r.max_iv)
            occ_status = self._own_status(occ_ind, occupancy)
            th = self.cfg.catalogue[occ_ind].thresholds
            if th is not None and occupancy is not None:
                self._check(
                    occ_ind,
                    f"{r.district or 'unassigned'}/{r.site}",
                    r.district,
                    occ_status,
                    occupancy,
                    _threshold_for(th, occ_status),
                    _ge_clear(occupancy, th),
                    r.newest,
                    counted=False,
                )
            free = self._own_status("parking.free_spaces", r.reporting - r.occupied)
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
            if self.with_sites and r.district in self.sites:
                self.sites[r.district].append(
                    Site(r.site, "parking_lot", r.site, r.district, max(occ_status, free), figures)
                )

    # -- waste -------------------------------------------------------------------

    def add_huts(self, rows: Iterable[HutRow]) -> None:
        for r in rows:
            reporting = r.online and r.ts is not None
            scopes = self._scopes(r.district)
            for acc in scopes:
                acc.device("waste", online=r.online, reporting=reporting, iv=r.iv)
            if not reporting:
                self._hut_site(r, reporting=False, entity_status=Status.NORMAL)
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
                acc.huts_full += self.th_full.status(r.fill_max) > Status.NORMAL
                acc.gas_alarms += any(
                    v is not None and v >= self.th.gas_warning[name]
                    for name, v in (
                        ("h2s_ppm", r.h2s_ppm),
                        ("nh3_ppm", r.nh3_ppm),
                        ("ch4_pct_lel", r.ch4_pct_lel),
                    )
                )
                acc.fire_risk += self.th_fire.status(r.temp_c) > Status.NORMAL
                acc.seepage += bool(r.seepage)
            worst = self._hut_checks(r)
            self._hut_site(r, reporting=True, entity_status=worst)

    def _hut_checks(self, r: HutRow) -> Status:
        """The reporting hut's checks; its worst status."""
        worst = self._against(
            "waste.huts_full", r.device_id, r.district, r.fill_max, self.th_full, r.ts
        )
        gases = {"h2s_ppm": r.h2s_ppm, "nh3_ppm": r.nh3_ppm, "ch4_pct_lel": r.ch4_pct_lel}
        warn, crit = self.th.gas_warning, self.th.gas_critical
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
        self._check(
            "waste.gas_alarms",
            r.device_id,
            r.district,
            gas_status,
            gas_value,
            gas_bound,
            gas_clear,
            r.ts,
        )
        st_fire = self._against(
            "waste.fire_risk", r.device_id, r.district, r.temp_c, self.th_fire, r.ts
        )
        st_seep = Status.ATTENTION if r.seepage else Status.NORMAL
        self._check(
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

    def _fill_check(self, r: HutRow, *, reporting: bool) -> tuple[float | None, Status]:
        """The hut's mean fill as a site figure, checked against its thresholds."""
        fill_ind = "waste.fill_pct_mean"
        fill = r.fill_mean if reporting and r.n_bins else None
        fill_status = self._own_status(fill_ind, fill)
        th = self.cfg.catalogue[fill_ind].thresholds
        if th is not None and fill is not None:
            self._check(
                fill_ind,
                r.device_id,
                r.district,
                fill_status,
                fill,
                _threshold_for(th, fill_status),
                _ge_clear(fill, th),
                r.ts,
                counted=False,
            )
        return fill, fill_status

    def _hut_site(self, r: HutRow, *, reporting: bool, entity_status: Status) -> None:
        fill_ind = "waste.fill_pct_mean"
        fill, fill_status = self._fill_check(r, reporting=reporting)
        coverage = 1.0 if reporting else 0.0
        stale_after = float(STALE_INTERVALS * r.iv)
        newest = r.ts if reporting else None
        drop_value = float(r.dropoffs_today) if reporting else None
        drop_status = self._own_status("waste.offhours_dropoffs_today", drop_value)
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
        if self.with_sites and r.district in self.sites:
            self.sites[r.district].append(
                Site(
                    r.device_id,
                    "waste_hut",
                    r.name or r.site,
                    r.district,
                    max(fill_status, drop_status, entity_status),
                    figures,
                )
            )

    # -- energy ------------------------------------------------------------------

    def add_meters(self, rows: Iterable[MeterRow]) -> None:
        sites: dict[tuple[str | None, str], list[MeterRow]] = {}
        for r in rows:
            reporting = r.online and r.ts is not None
            scopes = self._scopes(r.district)
            sites.setdefault((r.district, r.site or r.device_id), []).append(r)
            for acc in scopes:
                acc.device("energy", online=r.online, reporting=reporting, iv=r.iv)
                if r.key_consumer:
                    acc.key_registered += 1
                    acc.key_online += r.online
            if not reporting:
                continue
            low_pf = self.th_pf.status(r.power_factor) > Status.NORMAL
            volt = self._voltage_out(r.voltage_v)
            for acc in scopes:
                acc.seen("energy", r.ts)
                acc.load_kw += r.active_power_kw or 0.0
                acc.adjustable_kw += r.adjustable_kw or 0.0
                acc.consumption_kwh += r.consumption_kwh or 0.0
                acc.low_pf += low_pf
                acc.voltage_dev += volt
            self._meter_checks(r)
        for (district, site_id), meters in sites.items():
            self._energy_site(district, site_id, meters)

    def _meter_checks(self, r: MeterRow) -> None:
        """The reporting meter's power factor and voltage checks."""
        volt = self._voltage_out(r.voltage_v)
        self._against(
            "energy.low_power_factor", r.device_id, r.district, r.power_factor, self.th_pf, r.ts
        )
        v = r.voltage_v
        low, high = self.th.voltage_low, self.th.voltage_high
        margin_low = low * (1 + HYSTERESIS_MARGIN)
        margin_high = high * (1 - HYSTERESIS_MARGIN)
        self._check(
            "energy.voltage_deviation",
            r.device_id,
            r.district,
            Status.WARNING if volt else Status.NORMAL,
            v,
            (low if v is not None and v < low else high),
            v is None or margin_low <= v <= margin_high,
            r.ts,
        )

    def _energy_site(self, district: str | None, site_id: str, meters: list[MeterRow]) -> None:
        ind = "energy.load_kw"
        live = [m for m in meters if m.online and m.ts is not None]
        newest: datetime | None = None
        for m in live:
            newest = newer(newest, m.ts)
        load = sum(m.active_power_kw or 0.0 for m in live) if live else None
        used = sum(m.consumption_kwh or 0.0 for m in live) if live else None
        contract = sum(m.contract_kw for m in meters if m.contract_kw) or None
        share = self._load_check(district, site_id, load, contract, newest)
        status = max(self._own_status(ind, load), self.th_load.status(share))
        worst_meter = Status.NORMAL
        for m in live:
            worst_meter = max(worst_meter, self.th_pf.status(m.power_factor))
            if self._voltage_out(m.voltage_v):
                worst_meter = max(worst_meter, Status.WARNING)
        coverage = len(live) / len(meters)
        stale_after = float(STALE_INTERVALS * max(m.iv for m in meters))
        used_status = self._own_status("energy.consumption_kwh_today", used)
        figures = (
            Figure(ind, load, status, coverage, newest, stale_after),
            Figure(
                "energy.consumption_kwh_today", used, used_status, coverage, newest, stale_after
            ),
        )
        if self.with_sites and district in self.sites:
            name = meters[0].site or meters[0].name or site_id
            self.sites[district].append(
                Site(
                    site_id,
                    "energy_site",
                    name,
                    district,
                    max(status, used_status, worst_meter),
                    figures,
                )
            )

    def _load_check(
        self,
        district: str | None,
        site_id: str,
        load: float | None,
        contract: float | None,
        newest: datetime | None,
    ) -> float | None:
        """A site's live load against its contracted capacity; the share."""
        share = load / contract if load is not None and contract else None
        if contract is not None and share is not None:
            st = self.th_load.status(share)
            bound = _threshold_for(self.th_load, st)
            self._check(
                "energy.load_kw",
                f"{district or 'unassigned'}/{site_id}",
                district,
                st,
                load,
                bound * contract if bound is not None else None,
                _ge_clear(share, self.th_load),
                newest,
                counted=False,
            )
        return share

    # -- sums from SQL and the flagged entities ----------------------------------

    def add_totals(
        self, rows: Iterable[Totals], deposited: Iterable[tuple[str | None, str, float]]
    ) -> None:
        """Per-district sums of huts and meters (the same rules as `add_huts/add_meters`)."""
        for t in rows:
            kind = t.kind
            for acc in self._scopes(t.district):
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
        for district, category, kg in deposited:
            for acc in self._scopes(district):
                acc.deposited[category] = acc.deposited.get(category, 0.0) + kg

    def add_flagged(
        self, huts: Iterable[HutRow], meters: Iterable[MeterRow], sites: Iterable[SiteLoadRow]
    ) -> None:
        """Checks of the reporting entities past a threshold or with an active alert."""
        for h in huts:
            self._hut_checks(h)
            self._fill_check(h, reporting=True)
        for m in meters:
            self._meter_checks(m)
        for s in sites:
            self._load_check(s.district, s.site, s.load_kw, s.contract_kw, s.newest)

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
        domain = ind.domain
        if domain in KINDS:
            registered = acc.registered[domain]
            reporting = acc.reporting[domain]
            coverage = ratio(reporting, registered)
            newest = acc.newest[domain]
            stale_after = float(STALE_INTERVALS * acc.max_iv[domain])
        else:
            registered = sum(acc.registered.values())
            reporting = sum(acc.online.values())
            coverage = ratio(reporting, registered)
            newest = None
            for k in KINDS:
                newest = newer(newest, acc.newest[k])
            stale_after = float(STALE_INTERVALS * max(acc.max_iv.values()))
        value = VALUES[ind.id](view)
        breakdown = BREAKDOWNS.get(ind.id)
        by = breakdown(view, value) if breakdown is not None else None
        status = self._own_status(ind.id, value)
        status = max(status, acc.worst.get(ind.id, Status.NORMAL))
        return Figure(ind.id, value, status, coverage, newest, stale_after, by)


def build_snapshot(rows: EntityInputs, slow: SlowInputs, *, cfg: Config, now: datetime) -> Snapshot:
    """Every indicator for the city, each district and each site, entity by entity."""
    b = Builder(cfg, now)
    b.add_lots(rows.lots)
    b.add_huts(rows.huts)
    b.add_meters(rows.meters)
    return _finish(b, rows.unassigned, rows.ingest, slow)


def build_fast_snapshot(
    fast: FastInputs, slow: SlowInputs, *, cfg: Config, now: datetime
) -> Snapshot:
    """Every indicator for the city and each district from sums and flagged entities;
    no sites (those are built per district on demand with `build_snapshot`)."""
    b = Builder(cfg, now, with_sites=False)
    b.add_lots(fast.lots)
    b.add_totals(fast.totals, fast.deposited)
    b.add_flagged(fast.huts, fast.meters, fast.site_loads)
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
