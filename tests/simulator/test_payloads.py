"""Every message the simulator makes is what the collector's parser says it is."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityvitals.payloads import DeviceStatus, Event, Limits, Reading, parse_message
from cityvitals.reasons import Reason, Rejection
from cityvitals.simulator.faults import DEVICE_REASONS, FaultConfig, bad_message
from cityvitals.simulator.fleet import build_fleet
from cityvitals.simulator.sim import Outgoing, Simulation
from cityvitals.topics import Kind

PREFIX = "city"
LIMITS = Limits()
FLEET = build_fleet(5, 0.5)


def _parse(m: Outgoing, at: datetime) -> Reading | DeviceStatus | Event | Rejection:
    return parse_message(m.topic, m.payload, at, prefix=PREFIX, limits=LIMITS)


def _run(
    sim: Simulation, start: datetime, steps: int, step_s: float
) -> list[tuple[Outgoing, datetime]]:
    out = [(m, start) for m in sim.start()]
    now = start
    for _ in range(steps):
        now += timedelta(seconds=step_s)
        out.extend((m, now) for m in sim.step(now))
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    # Hypothesis takes naive bounds and attaches the zone itself.
    start=st.datetimes(
        min_value=datetime(2024, 1, 1),  # noqa: DTZ001
        max_value=datetime(2030, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    speed=st.sampled_from([1.0, 60.0, 600.0, 3600.0]),
)
def test_every_normal_message_passes_the_parser(seed: int, start: datetime, speed: float) -> None:
    sim = Simulation(FLEET, prefix=PREFIX, start_real=start, speed=speed, seed=seed)
    messages = _run(sim, start, steps=130, step_s=1.0)
    kinds = set()
    for m, at in messages:
        parsed = _parse(m, at)
        assert not isinstance(parsed, Rejection), (m, parsed)
        if isinstance(parsed, Reading):
            kinds.add(parsed.kind)
            assert parsed.seq is not None
    assert kinds == {Kind.PARKING, Kind.WASTE, Kind.ENERGY}


def test_seq_counts_up_by_one_per_device() -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)
    sim = Simulation(FLEET, prefix=PREFIX, start_real=start, speed=600, seed=1)
    seqs: dict[str, list[int]] = {}
    for m, at in _run(sim, start, steps=200, step_s=1.0):
        parsed = _parse(m, at)
        if isinstance(parsed, Reading):
            seqs.setdefault(parsed.device_id, []).append(parsed.seq or 0)
    assert seqs
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())


def test_same_seed_and_instants_give_the_same_messages() -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)

    def payloads() -> list[bytes]:
        sim = Simulation(FLEET, prefix=PREFIX, start_real=start, speed=60, seed=9)
        return [m.payload for m, _ in _run(sim, start, steps=90, step_s=1.0)]

    assert payloads() == payloads()


@pytest.mark.parametrize("reason", DEVICE_REASONS)
@pytest.mark.parametrize("kind", list(Kind))
def test_bad_message_is_rejected_for_its_reason(reason: Reason, kind: Kind) -> None:
    device = FLEET.of_kind(kind)[0]
    now = datetime(2026, 11, 24, tzinfo=UTC)
    for n in range(5):
        topic, payload = bad_message(reason, device, PREFIX, now, random.Random(n))
        parsed = parse_message(topic, payload, now, prefix=PREFIX, limits=LIMITS)
        assert isinstance(parsed, Rejection)
        assert parsed.reason is reason, parsed


def _faulty(faults: FaultConfig, steps: int = 120) -> list[tuple[Outgoing, datetime]]:
    start = datetime(2026, 11, 24, 2, tzinfo=UTC)
    sim = Simulation(FLEET, prefix=PREFIX, start_real=start, speed=1, seed=3, faults=faults)
    return _run(sim, start, steps=steps, step_s=1.0)


def test_bad_rate_produces_every_rejection_reason() -> None:
    reasons = set()
    for m, at in _faulty(FaultConfig(bad_rate=1.0)):
        parsed = _parse(m, at)
        if m.label.startswith("bad:"):
            assert isinstance(parsed, Rejection)
            assert m.label == f"bad:{parsed.reason}"
            reasons.add(parsed.reason)
    assert reasons == set(DEVICE_REASONS)


def test_duplicates_resend_the_same_bytes() -> None:
    messages = [m for m, _ in _faulty(FaultConfig(duplicate_rate=1.0))]
    dups = [m for m in messages if m.label == "duplicate"]
    originals = {(m.topic, m.payload) for m in messages if m.label == "reading"}
    assert dups
    assert all((m.topic, m.payload) in originals for m in dups)


def test_late_readings_arrive_later_with_their_own_timestamp() -> None:
    faults = FaultConfig(late_rate=1.0, late_s=(30.0, 60.0))
    late = [(m, at) for m, at in _faulty(faults) if m.label == "late"]
    assert late
    for m, at in late:
        parsed = _parse(m, at)
        assert isinstance(parsed, Reading)
        assert at - parsed.ts >= timedelta(seconds=29)


def test_skewed_clocks_are_rejected_as_clock_skew() -> None:
    for m, at in _faulty(FaultConfig(skew_rate=1.0), steps=5):
        parsed = _parse(m, at)
        if m.label == "reading":
            assert isinstance(parsed, Rejection)
            assert parsed.reason is Reason.CLOCK_SKEW


def test_a_hut_on_fire_reports_at_once_with_temp_over_60() -> None:
    hot = []
    for m, at in _faulty(FaultConfig(fire_rate=500.0), steps=30):
        parsed = _parse(m, at)
        if isinstance(parsed, Reading) and parsed.kind is Kind.WASTE:
            temp = orjson.loads(m.payload)["temp_c"]
            if temp >= 60:
                hot.append(temp)
    assert hot


def test_a_meter_reset_drops_the_register_to_about_zero() -> None:
    registers: dict[str, list[float]] = {}
    for m, at in _faulty(FaultConfig(reset_rate=60.0), steps=190):
        parsed = _parse(m, at)
        if isinstance(parsed, Reading) and parsed.kind is Kind.ENERGY:
            registers.setdefault(parsed.device_id, []).append(orjson.loads(m.payload)["energy_kwh"])
    assert any(min(r[1:]) < 5 < r[0] for r in registers.values() if len(r) > 1)


def test_silent_devices_say_offline_then_online_and_send_nothing_between() -> None:
    faults = FaultConfig(silent_rate=20.0, silent_s=(20.0, 40.0))
    silent: set[str] = set()
    came_back = 0
    for m, _ in _faulty(faults, steps=120):
        device = m.topic.split("/")[2]
        if m.label == "status" and m.payload == b"offline":
            silent.add(device)
        elif m.label == "status" and device in silent:
            silent.discard(device)
            came_back += 1
        else:
            assert device not in silent, m
    assert came_back


def test_no_device_message_asks_for_the_databases_verdict() -> None:
    device = FLEET.of_kind(Kind.ENERGY)[0]
    with pytest.raises(ValueError, match="unstorable"):
        bad_message(Reason.UNSTORABLE, device, PREFIX, datetime.now(UTC), random.Random(0))
