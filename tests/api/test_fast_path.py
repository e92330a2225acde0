"""The per-second snapshot (sums in SQL, flagged entities only) against the entity-by-entity
build, on one varied fleet in the real database: every figure and every alert-worthy check
must be the same, so the fast path is a faster way to the same numbers, not other numbers."""

from __future__ import annotations

import asyncio
import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cityvitals.api import queries
from cityvitals.api.alerts import AlertBook
from cityvitals.api.compute import (
    Config,
    EntityCheck,
    Snapshot,
    build_fast_snapshot,
    build_snapshot,
    entity_thresholds,
)
from cityvitals.api.fleet import Fleet, SyncResult
from cityvitals.catalogue import CATALOGUE, DISTRICTS, Status, with_overrides
from cityvitals.timeutil import local_day, local_midnight
from tests.api.conftest import NOW, device, energy, parking, seen, waste

S = timedelta(seconds=1)
CFG = Config(catalogue={i.id: i for i in CATALOGUE})
TH = entity_thresholds(CFG.catalogue)
# A deployment's thresholds, each moved so that part of the fleet crosses it the other way.
OVERRIDES = {
    "waste.huts_full": {"entity": {"attention": 70, "warning": 85, "critical": 95}},
    "waste.fire_risk": {"entity": {"critical": 55}},
    "waste.gas_alarms": {"params": {"h2s_ppm": 9.5, "nh3_ppm": 30, "ch4_pct_lel_critical": 20}},
    "parking.lots_near_full": {"params": {"lot_occupancy": 0.7}},
    "parking.occupancy_ratio": {"attention": 0.7, "warning": 0.8},
    "energy.low_power_factor": {"entity": {"attention": 0.95}},
    "energy.voltage_deviation": {"params": {"nominal_v": 225, "below_pct": 8, "above_pct": 5}},
    "energy.load_kw": {"entity": {"attention": 0.5, "warning": 0.8}},
    "devices.low_battery": {"params": {"parking_v": 3.6}},
    "waste.fill_pct_mean": {"attention": 30, "warning": 50},
}
# Districts of the catalogue, no district at all, and one the catalogue does not know.
PLACES: list[str | None] = [*(d.id for d in DISTRICTS[:5]), None, "atlantis"]
HUT_EDGES: list[dict[str, Any]] = [
    {},
    {},
    {},
    {"fills": [79.9, 20.0]},
    {"fills": [80.0, 10.0]},
    {"fills": [100.0, 100.0]},
    {"fills": [69.9, 69.9]},
    {"fills": [70.0, 70.0]},
    {"h2s": 9.9},
    {"h2s": 10.0},
    {"h2s": 16.0},
    {"nh3": 24.9},
    {"nh3": 25.0},
    {"ch4": 10.0},
    {"ch4": 30.0},
    {"temp_c": 59.9},
    {"temp_c": 60.0},
    {"seepage": True},
    {"h2s": None, "nh3": None, "ch4": None, "temp_c": None, "seepage": None},
]
METER_EDGES: list[dict[str, Any]] = [
    {},
    {},
    {},
    {"pf": 0.89},
    {"pf": 0.9},
    {"pf": None},
    {"voltage": 197.9},
    {"voltage": TH.voltage_low},
    {"voltage": TH.voltage_high},
    {"voltage": 236.0},
    {"voltage": None},
]


def _fleet(db: psycopg.Connection, rng: random.Random) -> None:
    """Lots, huts and meters with values on both sides of every threshold."""
    for i in range(120):
        place = rng.choice(PLACES)
        dev = f"p{i}"
        device(db, dev, "parking", district=place, site=f"lot{i % 9}")
        if rng.random() < 0.9:
            age = rng.choice([30, 500, 1900])  # online, online, offline (3 x 600 s)
            parking(
                db, dev, NOW - age * S, occupied=rng.random() < 0.8, battery_v=3.0 + rng.random()
            )
    for i in range(150):
        place = rng.choice(PLACES)
        dev = f"w{i}"
        device(db, dev, "waste", district=place, site=f"hut{i}", interval=rng.choice([None, 120]))
        if rng.random() < 0.1:
            continue  # registered, never heard from
        # Normal in every respect but (at most) one, set on or next to a bound.
        hut: dict[str, Any] = {
            "fills": [30.0, 40.0],
            "h2s": 1.0,
            "nh3": 5.0,
            "ch4": 2.0,
            "temp_c": 20.0,
            "seepage": False,
        }
        hut |= rng.choice(HUT_EDGES)
        fills = hut.pop("fills")
        waste(db, dev, NOW - rng.choice([10, 200, 1000]) * S, fills, **hut)
        for n in range(rng.randint(0, 2)):
            db.execute(
                "INSERT INTO events (device_id, event_id, kind, type, ts, received_at) "
                "VALUES (%s, %s, 'waste', 'off_hours_dropoff', %s, %s)",
                (dev, f"e{n}", NOW - 60 * S, NOW),
            )
        for cat in rng.sample(["wet", "dry", "recyclable", "hazardous"], 2):
            db.execute(
                "INSERT INTO waste_daily (device_id, day, category, deposited_kg) "
                "VALUES (%s, '2026-11-24', %s, %s)",
                (dev, cat, round(rng.uniform(0, 30), 2)),
            )
    for i in range(160):
        place = rng.choice(PLACES)
        dev = f"m{i}"
        device(
            db,
            dev,
            "energy",
            district=place,
            site=rng.choice([f"b{i // 4}", None]),
            key_consumer=i % 7 == 0,
            contract_kw=rng.choice([None, 40.0, 100.0]),
        )
        if rng.random() < 0.1:
            seen(db, dev, "energy", NOW - 10 * S, status_online=False, status_at=NOW - 5 * S)
            continue
        meter: dict[str, Any] = {"voltage": 220.0, "pf": 0.97} | rng.choice(METER_EDGES)
        energy(
            db,
            dev,
            NOW - rng.choice([5, 100, 400]) * S,
            kw=rng.choice([10.0, 30.0, 45.0, 60.0]),
            adjustable=rng.choice([None, 3.0]),
            **meter,
        )
        db.execute(
            "INSERT INTO energy_daily (device_id, day, consumption_kwh, last_ts) "
            "VALUES (%s, '2026-11-24', %s, %s)",
            (dev, rng.uniform(0, 500), NOW),
        )


def _alert(db: psycopg.Connection, indicator: str, entity: str) -> None:
    db.execute(
        "INSERT INTO alerts (indicator, entity, severity, state, opened_at, updated_at) "
        "VALUES (%s, %s, 'warning', 'active', %s, %s)",
        (indicator, entity, NOW, NOW),
    )


def _day() -> dict[str, Any]:
    midnight = local_midnight(NOW, "Asia/Shanghai")
    return {
        "now": NOW,
        "day": local_day(NOW, "Asia/Shanghai"),
        "midnight": midnight,
        "next_midnight": local_midnight(midnight + timedelta(hours=26), "Asia/Shanghai"),
    }


def _fleet_of(cfg: Config) -> Fleet:
    occupancy = cfg.catalogue["parking.occupancy_ratio"].thresholds
    return Fleet(entity_thresholds(cfg.catalogue), occupancy, now=NOW)


async def _sync(url: str, fleet: Fleet) -> SyncResult:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await fleet.sync(conn, **_day())


async def _all(url: str, cfg: Config, grown: Fleet) -> dict[str, Snapshot]:
    """The snapshot four ways: SQL sums, entity by entity, a city state loaded now, and
    `grown`, a city state that was empty and has folded the changes since."""
    day = _day()
    loaded = _fleet_of(cfg)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        slow = await queries.fetch_slow(conn, now=NOW, day=day["day"], midnight=day["midnight"])
        th = entity_thresholds(cfg.catalogue)
        occupancy = cfg.catalogue["parking.occupancy_ratio"].thresholds
        fast = await queries.fetch_fast([conn], **day, th=th, occupancy=occupancy)
        rows = await queries.fetch_entities(conn, **day, district=None, th=th)
        assert (await loaded.sync(conn, **day)).reloaded
        synced = await grown.sync(conn, **day)
        assert not synced.reloaded
        assert synced.devices > 0
        active = await AlertBook().load_active(conn)
        ingest = await queries.fetch_ingest(conn, NOW)
    return {
        "sql": build_fast_snapshot(fast, slow, cfg=cfg, now=NOW),
        "full": build_snapshot(rows, slow, cfg=cfg, now=NOW),
        "loaded": build_fast_snapshot(
            loaded.inputs(NOW, active, ingest), loaded.windowed(slow), cfg=cfg, now=NOW
        ),
        "grown": build_fast_snapshot(
            grown.inputs(NOW, active, ingest), grown.windowed(slow), cfg=cfg, now=NOW
        ),
    }


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _worth(checks: tuple[EntityCheck, ...], active: set[tuple[str, str]]) -> set[tuple[Any, ...]]:
    """The checks alerts act on: not normal, or about an entity with an active alert."""
    return {
        (c.indicator, c.entity, c.district, c.status, c.value, c.threshold, c.clear, c.newest)
        for c in checks
        if c.status > Status.NORMAL or (c.indicator, c.entity) in active
    }


@pytest.mark.parametrize("overridden", [False, True], ids=["defaults", "overridden"])
@pytest.mark.parametrize("seed", [1, 2])
def test_fast_snapshot_equals_the_entity_by_entity_build(
    db: psycopg.Connection, database_url: str, seed: int, overridden: bool, tmp_path: Path
) -> None:
    cfg = CFG
    if overridden:
        path = tmp_path / "thresholds.json"
        path.write_text(json.dumps(OVERRIDES), encoding="utf-8")
        cfg = Config(catalogue=with_overrides(path))
    grown = _fleet_of(cfg)
    # On a thread of its own: a test run earlier in the session (the screen's browser)
    # may have left an event loop running on this one, where asyncio.run refuses.
    with ThreadPoolExecutor(1) as pool:
        # An empty city, loaded before any device exists; it folds what follows.
        assert pool.submit(asyncio.run, _sync(database_url, grown)).result().devices == 0
        _fleet(db, random.Random(seed))
        # Active alerts on entities now back to normal: the fast path must still read them.
        active = {
            ("energy.low_power_factor", "m0"),
            ("waste.fire_risk", "w1"),
            ("energy.load_kw", f"{PLACES[0]}/b0"),
            ("parking.occupancy_ratio", f"{PLACES[1]}/lot0"),
        }
        for indicator, entity in active:
            _alert(db, indicator, entity)
        snaps = pool.submit(asyncio.run, _all(database_url, cfg, grown)).result()
    full = snaps["full"]
    for way in ("sql", "loaded", "grown"):
        _same_snapshot(snaps[way], full, active)


def same_snapshot(mine: Snapshot, theirs: Snapshot, active: set[tuple[str, str]]) -> int:
    """Assert two snapshots agree figure by figure and on every check alerts act on
    (`active`: the entities with an active alert); how many figures had a value."""
    scopes = [(mine.city, theirs.city)] + [
        (mine.districts[d], theirs.districts[d]) for d in theirs.districts
    ]
    compared = 0
    for a, b in scopes:
        assert a.status == b.status, a.id
        for f, g in zip(a.figures, b.figures, strict=True):
            assert f.id == g.id
            where = f"{a.id} {f.id}"
            assert _same(f.value, g.value), (where, f.value, g.value)
            assert f.status == g.status, where
            assert _same(f.coverage, g.coverage), where
            assert f.newest == g.newest, where
            assert f.stale_after_s == g.stale_after_s, where
            assert (f.by is None) == (g.by is None), where
            for k in f.by or {}:
                assert _same(f.by[k] if f.by else None, g.by[k] if g.by else None), where
            compared += f.value is not None
    assert _worth(mine.checks, active) == _worth(theirs.checks, active)
    return compared


def _same_snapshot(fast: Snapshot, full: Snapshot, active: set[tuple[str, str]]) -> None:
    compared = same_snapshot(fast, full, active)
    # The fleet reaches every domain: most figures have a value to compare.
    assert compared > 100
    worth = _worth(full.checks, active)
    # Every kind of per-entity check fires somewhere in this fleet.
    fired = {c[0] for c in worth}
    assert {
        "waste.huts_full",
        "waste.gas_alarms",
        "waste.fire_risk",
        "waste.seepage",
        "waste.fill_pct_mean",
        "energy.low_power_factor",
        "energy.voltage_deviation",
        "energy.load_kw",
        "parking.occupancy_ratio",
    } <= fired
    # The fast path reads far fewer entities than there are.
    assert len(fast.checks) < len(full.checks)
    assert fast.sites == {d.id: () for d in DISTRICTS}
    assert any(full.sites.values())
