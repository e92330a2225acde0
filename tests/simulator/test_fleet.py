"""The reference fleet and the daily curves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cityvitals.catalogue import DISTRICTS
from cityvitals.simulator import curves
from cityvitals.simulator.fleet import build_fleet
from cityvitals.simulator.load import synthetic_ids
from cityvitals.simulator.sim import Simulation
from cityvitals.timeutil import zone
from cityvitals.topics import DEVICE_ID_RE

SH = zone("Asia/Shanghai")


def test_same_seed_gives_the_same_fleet_and_another_seed_does_not() -> None:
    assert build_fleet(7, 1.0) == build_fleet(7, 1.0)
    assert build_fleet(7, 1.0).devices != build_fleet(8, 1.0).devices


def test_default_fleet_is_a_laptop_demo_covering_all_16_districts() -> None:
    fleet = build_fleet(0, 1.0)
    assert 250 <= len(fleet) <= 400
    assert {d.district for d in fleet} == {d.id for d in DISTRICTS}
    assert set(fleet.counts()) == {"parking", "waste", "energy"}
    ids = fleet.ids()
    assert len(set(ids)) == len(ids)
    assert all(DEVICE_ID_RE.fullmatch(i) for i in ids)


def test_scale_100_is_megacity_size() -> None:
    fleet = build_fleet(0, 100)
    assert len(fleet) >= 30_000


def test_devices_carry_their_registry_fields() -> None:
    fleet = build_fleet(0, 1.0)
    hut = fleet.of_kind("waste")[0]
    assert hut.registry_record()["opening_hours"] == [["07:00", "09:00"], ["18:00", "20:00"]]
    assert 1 <= len(hut.categories) <= 8
    meters = fleet.of_kind("energy")
    assert all(m.contract_kw and m.contract_kw > 0 for m in meters)
    assert any(m.key_consumer for m in meters)
    assert fleet.ids()[0] == "pk-huangpu-0001-001"


def test_synthetic_energy_ids_are_the_fleets_meters() -> None:
    assert synthetic_ids("energy", 80) == build_fleet(3, 1.0).ids("energy")


def test_parking_curve_peaks_by_day_in_business_and_by_night_in_residential_districts() -> None:
    day = datetime(2026, 11, 24, 11, 0, tzinfo=SH)  # a Tuesday
    night = datetime(2026, 11, 24, 3, 0, tzinfo=SH)
    assert curves.parking_occupancy(True, day) > curves.parking_occupancy(True, night) + 0.4
    assert curves.parking_occupancy(False, night) > curves.parking_occupancy(False, day) + 0.3


def test_simulated_lots_follow_the_curve() -> None:
    fleet = build_fleet(1, 4.0)
    start = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    sim = Simulation(
        fleet,
        prefix="city",
        start_real=start,
        start_sim=datetime(2026, 11, 24, 0, 0, tzinfo=SH),
        speed=60,
        seed=1,
    )
    sim.start()
    seen: dict[int, tuple[float, float]] = {}
    now = start
    for _ in range(12 * 60):  # 12 simulated hours, one simulated minute a step
        now += timedelta(seconds=1)
        sim.step(now)
        hour = sim.local(sim.sim_time(now)).hour
        seen[hour] = (sim.occupancy(business=True), sim.occupancy(business=False))
    assert seen[11][0] > seen[3][0]
    assert seen[3][1] > seen[11][1]


def test_bins_fill_in_the_drop_off_windows_and_empty_at_collection() -> None:
    fleet = build_fleet(2, 2.0)
    start = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    sim = Simulation(
        fleet,
        prefix="city",
        start_real=start,
        start_sim=datetime(2026, 11, 24, 6, 55, tzinfo=SH),
        speed=60,
        seed=2,
    )
    sim.start()
    before = sim.bin_fill("wet")
    now = start + timedelta(seconds=125)  # 09:00
    sim.step(now)
    after_window = sim.bin_fill("wet")
    sim.step(now + timedelta(seconds=40))  # 09:40, after the 09:30 wet collection
    assert after_window > before + 10
    assert sim.bin_fill("wet") < 5
