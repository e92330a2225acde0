"""Parsing of docs/wire.md-§3: every range, every reason, both timestamp forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityvitals.payloads import (
    DeviceStatus,
    EnergyPayload,
    Event,
    Limits,
    ParkingPayload,
    Reading,
    WastePayload,
    parse_message,
)
from cityvitals.reasons import Reason, Rejection
from cityvitals.topics import Kind

NOW = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
LIMITS = Limits()


def parse(topic: str, body: object) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_message(f"city/{topic}", raw, NOW, prefix="city", limits=LIMITS)


def rejected(result: object, reason: Reason, field: str) -> None:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert result.detail.startswith(field), result.detail


HUT = {"bins": [{"category": "wet", "fill_pct": 72.5, "weight_kg": 38.2}]}
METER = {"active_power_kw": 182.4}


@pytest.mark.parametrize(
    ("topic", "base", "field", "bad", "good"),
    [
        ("parking/p1/telemetry", {"occupied": True}, "battery_v", 5.01, 5),
        ("parking/p1/telemetry", {"occupied": True}, "battery_v", -0.1, 0),
        ("parking/p1/telemetry", {"occupied": True}, "rssi_dbm", 0.5, 0),
        ("parking/p1/telemetry", {"occupied": True}, "rssi_dbm", -151, -150),
        ("waste/w1/telemetry", HUT, "temp_c", 150.1, 150),
        ("waste/w1/telemetry", HUT, "temp_c", -40.1, -40),
        ("energy/e1/telemetry", METER, "voltage_v", 1000.5, 1000),
        ("energy/e1/telemetry", METER, "power_factor", 1.01, 1),
        ("energy/e1/telemetry", METER, "energy_kwh", -1, 0),
        ("energy/e1/telemetry", METER, "adjustable_kw", -0.5, 0),
        ("energy/e1/telemetry", {}, "active_power_kw", 100000.1, -100000),
    ],
)
def test_each_range_bound_is_inclusive_and_out_of_range_names_the_field(
    topic: str, base: dict[str, object], field: str, bad: float, good: float
) -> None:
    rejected(parse(topic, {**base, field: bad}), Reason.OUT_OF_RANGE, field)
    assert isinstance(parse(topic, {**base, field: good}), Reading)


@pytest.mark.parametrize(
    ("bins", "reason", "field"),
    [
        ([], Reason.SCHEMA, "bins"),
        ([{"category": "wet", "fill_pct": 1}] * 9, Reason.SCHEMA, "bins"),
        ([{"category": "metal", "fill_pct": 1}], Reason.SCHEMA, "bins[0].category"),
        ([{"category": "wet"}], Reason.SCHEMA, "bins[0].fill_pct"),
        ([{"category": "wet", "fill_pct": 100.5}], Reason.OUT_OF_RANGE, "bins[0].fill_pct"),
        (
            [{"category": "dry", "fill_pct": 5, "weight_kg": 2001}],
            Reason.OUT_OF_RANGE,
            "bins[0].weight_kg",
        ),
    ],
)
def test_bins_are_checked_one_by_one(bins: object, reason: Reason, field: str) -> None:
    rejected(parse("waste/w1/telemetry", {"bins": bins}), reason, field)


def test_gas_limits_name_the_nested_field() -> None:
    rejected(
        parse("waste/w1/telemetry", {**HUT, "gas": {"h2s_ppm": 1000.5}}),
        Reason.OUT_OF_RANGE,
        "gas.h2s_ppm",
    )
    rejected(
        parse("waste/w1/telemetry", {**HUT, "gas": {"ch4_pct_lel": 101}}),
        Reason.OUT_OF_RANGE,
        "gas.ch4_pct_lel",
    )


def test_wrong_types_and_missing_fields_are_schema_errors_naming_the_field() -> None:
    rejected(parse("parking/p1/telemetry", {"occupied": "true"}), Reason.SCHEMA, "occupied")
    rejected(parse("parking/p1/telemetry", {"occupied": 1}), Reason.SCHEMA, "occupied")
    rejected(parse("parking/p1/telemetry", {"battery_v": 3.3}), Reason.SCHEMA, "occupied")
    rejected(
        parse("energy/e1/telemetry", {"active_power_kw": None}), Reason.SCHEMA, "active_power_kw"
    )
    rejected(parse("parking/p1/telemetry", [1, 2]), Reason.SCHEMA, "$")
    rejected(parse("parking/p1/telemetry", {"occupied": True, "seq": 1.5}), Reason.SCHEMA, "seq")


def test_infinity_written_as_a_huge_number_is_out_of_range() -> None:
    rejected(
        parse("energy/e1/telemetry", b'{"active_power_kw": 1, "energy_kwh": 1e999}'),
        Reason.OUT_OF_RANGE,
        "energy_kwh",
    )


def test_unknown_fields_are_ignored() -> None:
    r = parse("parking/p1/telemetry", {"occupied": False, "firmware": {"v": 2}, "x": [1]})
    assert isinstance(r, Reading)
    assert r.payload == ParkingPayload(occupied=False)


def test_timestamps_in_rfc3339_and_epoch_ms_are_the_same_instant() -> None:
    iso = parse("energy/e1/telemetry", {**METER, "ts": "2026-11-24T07:59:00.250+08:00"})
    ms = parse("energy/e1/telemetry", {**METER, "ts": 1795478340250})
    assert isinstance(iso, Reading)
    assert isinstance(ms, Reading)
    assert iso.ts == ms.ts == datetime(2026, 11, 23, 23, 59, 0, 250000, tzinfo=UTC)
    assert not iso.ts_from_broker


def test_absent_ts_uses_receive_time_and_says_so() -> None:
    r = parse("energy/e1/telemetry", METER)
    assert isinstance(r, Reading)
    assert (r.ts, r.ts_from_broker) == (NOW, True)


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ((NOW + timedelta(minutes=5, seconds=1)).isoformat(), Reason.CLOCK_SKEW),
        ((NOW - timedelta(days=7, seconds=1)).isoformat(), Reason.TOO_OLD),
        ("2026-11-24T08:00:00", Reason.SCHEMA),
        ("not a time", Reason.SCHEMA),
        (10**20, Reason.OUT_OF_RANGE),
    ],
)
def test_bad_timestamps(ts: object, reason: Reason) -> None:
    rejected(parse("energy/e1/telemetry", {**METER, "ts": ts}), reason, "ts")


def test_timestamps_just_inside_the_limits_pass() -> None:
    for ts in (NOW + timedelta(minutes=5), NOW - timedelta(days=7)):
        assert isinstance(parse("energy/e1/telemetry", {**METER, "ts": ts.isoformat()}), Reading)


@pytest.mark.parametrize(
    ("topic", "reason", "field"),
    [
        ("city/water/w1/telemetry", Reason.UNKNOWN_KIND, "topic.kind"),
        ("city/parking/-bad/telemetry", Reason.BAD_TOPIC, "topic.device_id"),
        ("city/parking/" + "a" * 65 + "/telemetry", Reason.BAD_TOPIC, "topic.device_id"),
        ("city/parking/p1/config", Reason.BAD_TOPIC, "topic.channel"),
        ("city/parking/p1", Reason.BAD_TOPIC, "topic"),
        ("other/parking/p1/telemetry", Reason.BAD_TOPIC, "topic"),
    ],
)
def test_topic_grammar(topic: str, reason: Reason, field: str) -> None:
    rejected(parse_message(topic, b"{}", NOW, prefix="city", limits=LIMITS), reason, field)


def test_size_limit_and_invalid_json() -> None:
    big = json.dumps({"occupied": True, "pad": "x" * 8192}).encode()
    rejected(parse("parking/p1/telemetry", big), Reason.TOO_LARGE, "payload")
    rejected(parse("parking/p1/telemetry", b'{"occupied": tru'), Reason.INVALID_JSON, "payload")
    rejected(parse("parking/p1/telemetry", b"\xff\xfe"), Reason.INVALID_JSON, "payload")


def test_status_and_events() -> None:
    assert parse("parking/p1/status", b"offline") == DeviceStatus(Kind.PARKING, "p1", False, NOW)
    rejected(parse("parking/p1/status", b"maybe"), Reason.SCHEMA, "status")
    ev = parse("waste/w1/event", {"type": "off_hours_dropoff", "id": "c-1", "confidence": 0.9})
    assert isinstance(ev, Event)
    assert (ev.type, ev.event_id, ev.attrs) == ("off_hours_dropoff", "c-1", {"confidence": 0.9})
    rejected(parse("waste/w1/event", {"type": "Drop Off", "id": "c-2"}), Reason.SCHEMA, "type")
    rejected(parse("waste/w1/event", {"type": "lid_jam"}), Reason.SCHEMA, "id")


@given(
    st.floats(min_value=-100000, max_value=100000),
    st.floats(min_value=0, max_value=1e12) | st.none(),
)
def test_any_in_range_meter_reading_is_accepted(kw: float, kwh: float | None) -> None:
    r = parse("energy/e1/telemetry", {"active_power_kw": kw, "energy_kwh": kwh})
    assert isinstance(r, Reading)
    assert r.payload == EnergyPayload(active_power_kw=kw, energy_kwh=kwh)


def test_waste_model_keeps_bins_in_order() -> None:
    r = parse(
        "waste/w1/telemetry",
        {"bins": [{"category": "dry", "fill_pct": 1}, {"category": "wet", "fill_pct": 2}]},
    )
    assert isinstance(r, Reading)
    assert isinstance(r.payload, WastePayload)
    assert [b.category for b in r.payload.bins] == ["dry", "wet"]
