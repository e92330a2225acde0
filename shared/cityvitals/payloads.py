"""Payload models (docs/wire.md) and the one parser that turns topic + bytes into a value.

msgspec decodes and validates in one pass in C; the numbers behind that choice are
in docs/benchmarks.md (parse). Payload ranges live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec

from cityvitals.reasons import Reason, Rejection
from cityvitals.timeutil import from_epoch_ms
from cityvitals.topics import Channel, Kind, Topic, parse_topic

# The payload ranges of docs/wire.md, as msgspec constraints so that decoding checks them.
BatteryV = Annotated[float, msgspec.Meta(ge=0, le=5)]
RssiDbm = Annotated[float, msgspec.Meta(ge=-150, le=0)]
Pct = Annotated[float, msgspec.Meta(ge=0, le=100)]
WeightKg = Annotated[float, msgspec.Meta(ge=0, le=2000)]
Ppm = Annotated[float, msgspec.Meta(ge=0, le=1000)]
TempC = Annotated[float, msgspec.Meta(ge=-40, le=150)]
HutBatteryV = Annotated[float, msgspec.Meta(ge=0, le=100)]
PowerKw = Annotated[float, msgspec.Meta(ge=-100000, le=100000)]
# docs/wire.md gives only a lower bound here; the upper bounds keep every float finite
# (JSON's 1e999 decodes to infinity) and are far beyond any real meter.
EnergyKwh = Annotated[float, msgspec.Meta(ge=0, le=1e15)]
AdjustableKw = Annotated[float, msgspec.Meta(ge=0, le=100000)]
VoltageV = Annotated[float, msgspec.Meta(ge=0, le=1000)]
PowerFactor = Annotated[float, msgspec.Meta(ge=0, le=1)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
TsField = int | str | None

Category = Literal["wet", "dry", "recyclable", "hazardous"]
CATEGORIES: tuple[Category, ...] = ("wet", "dry", "recyclable", "hazardous")


class ParkingPayload(msgspec.Struct, frozen=True):
    """One sensor per parking space (docs/wire.md)."""

    occupied: bool
    ts: TsField = None
    battery_v: BatteryV | None = None
    rssi_dbm: RssiDbm | None = None
    seq: Seq | None = None


class Bin(msgspec.Struct, frozen=True):
    """One bin of a waste hut."""

    category: Category
    fill_pct: Pct
    weight_kg: WeightKg | None = None


class Gas(msgspec.Struct, frozen=True):
    """Gas readings of a waste hut."""

    h2s_ppm: Ppm | None = None
    nh3_ppm: Ppm | None = None
    ch4_pct_lel: Pct | None = None


class WastePayload(msgspec.Struct, frozen=True):
    """One smart garbage hut with up to 8 bins (docs/wire.md)."""

    bins: Annotated[list[Bin], msgspec.Meta(min_length=1, max_length=8)]
    ts: TsField = None
    gas: Gas | None = None
    temp_c: TempC | None = None
    seepage: bool | None = None
    door_open: bool | None = None
    # docs/wire.md shows a 12 V hut battery and gives no range; 0-100 V keeps it sane.
    battery_v: HutBatteryV | None = None
    seq: Seq | None = None


class EnergyPayload(msgspec.Struct, frozen=True):
    """One meter at a building or site (docs/wire.md)."""

    active_power_kw: PowerKw
    ts: TsField = None
    energy_kwh: EnergyKwh | None = None
    voltage_v: VoltageV | None = None
    power_factor: PowerFactor | None = None
    adjustable_kw: AdjustableKw | None = None
    seq: Seq | None = None


EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class EventPayload(msgspec.Struct, frozen=True):
    """An event, unique per device by `id` (docs/wire.md)."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    ts: TsField = None
    seq: Seq | None = None


_PAYLOAD_TYPES: dict[Kind, type[ParkingPayload | WastePayload | EnergyPayload]] = {
    Kind.PARKING: ParkingPayload,
    Kind.WASTE: WastePayload,
    Kind.ENERGY: EnergyPayload,
}
_DECODERS = {kind: msgspec.json.Decoder(t) for kind, t in _PAYLOAD_TYPES.items()}
_EVENT_DECODER = msgspec.json.Decoder(EventPayload)
_ANY_DECODER = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits of docs/wire.md (configurable)."""

    max_payload_bytes: int = 8192
    clock_skew: timedelta = timedelta(minutes=5)
    too_old: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Reading:
    """A valid telemetry reading."""

    kind: Kind
    device_id: str
    ts: datetime
    ts_from_broker: bool
    received_at: datetime
    seq: int | None
    payload: ParkingPayload | WastePayload | EnergyPayload


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's `online`/`offline` status."""

    kind: Kind
    device_id: str
    online: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """A valid device event; `attrs` keeps its other fields."""

    kind: Kind
    device_id: str
    event_id: str
    type: str
    ts: datetime
    ts_from_broker: bool
    received_at: datetime
    attrs: dict[str, Any]


Message = Reading | DeviceStatus | Event


def _classify(err: msgspec.ValidationError) -> Rejection:
    text = str(err)
    where = text.rsplit(" - at ", 1)
    path = where[1].strip("`") if len(where) == 2 else "$"
    field = path[2:] if path.startswith("$.") else path
    bounded = ("Number out of range" in text or "Integer value out of range" in text) or (
        text.startswith("Expected `")
        and any(op in where[0] for op in (" >= ", " <= ", " > ", " < "))
        and "length" not in where[0]
    )
    if bounded:
        return Rejection(Reason.OUT_OF_RANGE, f"{field}: {where[0]}")
    if text.startswith("Object missing required field"):
        missing = text.split("`")[1] if "`" in text else "?"
        prefix = "" if field == "$" else f"{field}."
        return Rejection(Reason.SCHEMA, f"{prefix}{missing}: required field missing")
    return Rejection(Reason.SCHEMA, f"{field}: {where[0]}")


def _timestamp(
    raw: int | str | None, received_at: datetime, limits: Limits
) -> tuple[datetime, bool] | Rejection:
    if raw is None:
        return received_at, True
    if isinstance(raw, int):
        try:
            ts = from_epoch_ms(raw)
        except (OverflowError, ValueError):
            return Rejection(Reason.OUT_OF_RANGE, f"ts: epoch milliseconds {raw} out of range")
    else:
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return Rejection(Reason.SCHEMA, f"ts: {raw[:64]!r} is not RFC 3339")
        if ts.tzinfo is None:
            return Rejection(Reason.SCHEMA, f"ts: {raw[:64]!r} has no UTC offset")
    if ts - received_at > limits.clock_skew:
        return Rejection(
            Reason.CLOCK_SKEW,
            f"ts: {ts.isoformat()} is {(ts - received_at).total_seconds():.0f} s in the future",
        )
    if received_at - ts > limits.too_old:
        return Rejection(
            Reason.TOO_OLD,
            f"ts: {ts.isoformat()} is older than {limits.too_old.total_seconds():.0f} s",
        )
    return ts, False


def _status(topic: Topic, payload: bytes, received_at: datetime) -> DeviceStatus | Rejection:
    text = payload.strip().strip(b'"').lower()
    if text in (b"online", b"offline"):
        return DeviceStatus(topic.kind, topic.device_id, text == b"online", received_at)
    return Rejection(Reason.SCHEMA, f"status: expected 'online' or 'offline', got {payload[:32]!r}")


# Nesting no reading or event needs; deeper documents are refused before decoding, so
# that no decoder or encoder recurses near the interpreter's limit.
MAX_DEPTH = 32
_OPENERS = (b"[", b"{")


def _too_deep(payload: bytes) -> bool:
    """Whether brackets (outside strings) nest deeper than MAX_DEPTH."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _not_utf8(payload: bytes) -> str | None:
    """Why a payload is not UTF-8 (msgspec skips unknown fields without checking)."""
    if payload.isascii():
        return None
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"payload: not UTF-8 at byte {err.start}"
    return None


# JSON can carry U+0000 only as this escape (a raw NUL byte is malformed JSON), and
# PostgreSQL stores no U+0000 in text or jsonb: such a message is refused here.
_NUL_ESCAPE = b"\\u0000"


def _nul_path(payload: bytes) -> str | None:
    """The path of a JSON key or string holding U+0000, or None (also for bad JSON)."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    # Iterative: a deeply nested document must not exhaust the interpreter's stack.
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return f"{path}.{key}"
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def printable(text: str) -> str:
    """Text with U+0000 spelled as an escape, so that the database can store it."""
    return text.replace("\x00", "\\u0000")


def parse_message(
    topic_name: str, payload: bytes, received_at: datetime, *, prefix: str, limits: Limits
) -> Message | Rejection:
    """Turn one MQTT message into a `Reading`, `DeviceStatus`, `Event` or a `Rejection`."""
    topic = parse_topic(topic_name, prefix)
    if isinstance(topic, Rejection):
        return topic
    if len(payload) > limits.max_payload_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"payload: {len(payload)} bytes, at most {limits.max_payload_bytes}"
        )
    if topic.channel is Channel.STATUS:
        return _status(topic, payload, received_at)
    not_utf8 = _not_utf8(payload)
    if not_utf8 is not None:
        return Rejection(Reason.INVALID_JSON, not_utf8)
    if _too_deep(payload):
        return Rejection(Reason.SCHEMA, f"payload: nested deeper than {MAX_DEPTH} levels")
    if _NUL_ESCAPE in payload:
        where = _nul_path(payload)
        if where is not None:
            field = where[2:] if where.startswith("$.") else where
            return Rejection(Reason.SCHEMA, f"{printable(field)}: a string holds U+0000")
    try:
        if topic.channel is Channel.EVENT:
            return _event(topic, payload, received_at, limits)
        body = _DECODERS[topic.kind].decode(payload)
    except msgspec.ValidationError as err:
        return _classify(err)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        return Rejection(Reason.INVALID_JSON, f"payload: {err}")
    when = _timestamp(body.ts, received_at, limits)
    if isinstance(when, Rejection):
        return when
    return Reading(topic.kind, topic.device_id, when[0], when[1], received_at, body.seq, body)


def _event(
    topic: Topic, payload: bytes, received_at: datetime, limits: Limits
) -> Event | Rejection:
    body = _EVENT_DECODER.decode(payload)
    if EVENT_TYPE_RE.fullmatch(body.type) is None:
        return Rejection(Reason.SCHEMA, f"type: {body.type[:40]!r} is not a short lowercase word")
    when = _timestamp(body.ts, received_at, limits)
    if isinstance(when, Rejection):
        return when
    attrs = _ANY_DECODER.decode(payload)
    for key in ("ts", "type", "id"):
        attrs.pop(key, None)
    return Event(
        topic.kind, topic.device_id, body.id, body.type, when[0], when[1], received_at, attrs
    )
