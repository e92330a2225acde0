"""Faults on demand: what real fleets do wrong, so every indicator and alert can move.

Message faults are shares of the normal messages (`bad_rate` 0.01 adds one bad
message per hundred); device faults are rates per device and hour of wall-clock
time (`fire_rate` 0.5 sets each hut on fire about once every two hours).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from cityvitals.reasons import Reason
from cityvitals.topics import Kind, topic_for

from .fleet import Device

# What a device can get rejected for by what it sends; `unstorable` is the database's
# verdict on a message that passed every check, so no device can ask for it.
DEVICE_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r is not Reason.UNSTORABLE)


@dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject, and how often."""

    # Share of normal messages followed by a bad one, of a reason drawn from `bad_reasons`.
    bad_rate: float = 0.0
    bad_reasons: tuple[Reason, ...] = DEVICE_REASONS
    # Share of readings sent twice (the same bytes: same ts, same seq).
    duplicate_rate: float = 0.0
    # Share of readings held back and sent `late_s` seconds later with their own ts.
    late_rate: float = 0.0
    late_s: tuple[float, float] = (30.0, 300.0)
    # Share of devices whose clock runs `skew_s` seconds ahead (their readings are
    # rejected as clock_skew when that exceeds the collector's limit, 300 s).
    skew_rate: float = 0.0
    skew_s: tuple[float, float] = (400.0, 1200.0)
    # Per device-hour: a device goes silent for `silent_s` seconds.
    silent_rate: float = 0.0
    silent_s: tuple[float, float] = (600.0, 1800.0)
    # Per hut-hour: a waste hut catches fire (temp_c ≥ 60) for `fire_s` seconds.
    fire_rate: float = 0.0
    fire_s: tuple[float, float] = (600.0, 1200.0)
    # Per meter-hour: a meter's energy register resets to about zero.
    reset_rate: float = 0.0

    @property
    def any(self) -> bool:
        """Whether any fault is switched on."""
        return any(
            (
                self.bad_rate,
                self.duplicate_rate,
                self.late_rate,
                self.skew_rate,
                self.silent_rate,
                self.fire_rate,
                self.reset_rate,
            )
        )


def _ts(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def _valid_body(device: Device, now: datetime) -> dict[str, object]:
    if device.kind is Kind.PARKING:
        return {"ts": _ts(now), "occupied": False, "battery_v": 3.5}
    if device.kind is Kind.WASTE:
        return {"ts": _ts(now), "bins": [{"category": "wet", "fill_pct": 10.0}]}
    return {"ts": _ts(now), "active_power_kw": 10.0}


def bad_message(
    reason: Reason, device: Device, prefix: str, now: datetime, rng: random.Random
) -> tuple[str, bytes]:
    """A message the collector must reject with `reason` (docs/wire.md), from this device."""
    topic = topic_for(prefix, device.kind, device.device_id, "telemetry")
    body = _valid_body(device, now)
    if reason is Reason.UNKNOWN_KIND:
        return topic_for(prefix, "streetlight", device.device_id, "telemetry"), orjson.dumps(body)
    if reason is Reason.BAD_TOPIC:
        # Device ids must start with a letter or digit (docs/wire.md).
        return topic_for(prefix, device.kind, f"-{device.device_id}", "telemetry"), orjson.dumps(
            body
        )
    if reason is Reason.TOO_LARGE:
        body["debug_dump"] = "x" * (8192 + rng.randint(1, 2048))
        return topic, orjson.dumps(body)
    if reason is Reason.INVALID_JSON:
        raw = orjson.dumps(body)
        return topic, raw[: rng.randint(1, len(raw) - 1)]
    if reason is Reason.SCHEMA:
        if device.kind is Kind.PARKING:
            body["occupied"] = "yes"
        elif device.kind is Kind.WASTE:
            body["bins"] = [{"category": "compost", "fill_pct": 10.0}]
        else:
            del body["active_power_kw"]
        return topic, orjson.dumps(body)
    if reason is Reason.OUT_OF_RANGE:
        if device.kind is Kind.PARKING:
            body["battery_v"] = 9.9
        elif device.kind is Kind.WASTE:
            body["bins"] = [{"category": "wet", "fill_pct": 130.0}]
        else:
            body["power_factor"] = 1.7
        return topic, orjson.dumps(body)
    if reason is Reason.CLOCK_SKEW:
        body["ts"] = _ts(now + timedelta(minutes=rng.uniform(10, 60)))
        return topic, orjson.dumps(body)
    if reason is Reason.TOO_OLD:
        # A reading from a device that was off the network for weeks.
        body["ts"] = _ts(now - timedelta(days=rng.uniform(8, 30)))
        return topic, orjson.dumps(body)
    raise ValueError(f"no device message is rejected as {reason.value}: the database decides")
