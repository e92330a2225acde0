"""The simulated city as a state machine: given wall-clock instants, the messages due.

No network and no clock of its own, so tests drive it with chosen instants and a
seed gives the same messages every time. Two clocks are involved:

- the *simulated* clock, `start_sim + speed * (now - start_real)`, drives the daily
  curves (occupancy, bin fill, building load), so `--speed 60` plays an hour a minute;
- the *wall* clock stamps every reading's `ts` and paces reports (heartbeats every
  10 minutes, huts every 5, meters on the minute), so readings never trip the
  collector's 5-minute clock-skew limit and devices stay online by the online rule
  of docs/indicators.md whatever the speed.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from cityvitals.payloads import Category
from cityvitals.timeutil import zone
from cityvitals.topics import Kind, topic_for

from . import curves
from .faults import FaultConfig, bad_message
from .fleet import Device, Fleet

HEARTBEAT = timedelta(seconds=600)
HUT_REPORT = timedelta(seconds=300)
# Gas alarm limits of docs/indicators.md: a hut reports at once when it crosses one.
GAS_ALARM = {"h2s_ppm": 10.0, "nh3_ppm": 25.0, "ch4_pct_lel": 10.0}
FIRE_C = 60.0


@dataclass(slots=True)
class Outgoing:
    """One message to publish."""

    topic: str
    payload: bytes
    retain: bool = False
    # Device messages (readings, events, faults) count towards `--messages`; status does not.
    counted: bool = True
    label: str = "reading"


@dataclass(slots=True)
class _Space:
    device: Device
    topic: str
    occupied: bool
    next_report: datetime
    rssi: float


@dataclass(slots=True)
class _Lot:
    business: bool
    bias: float
    spaces: list[_Space]


@dataclass(slots=True)
class _Hut:
    device: Device
    topic: str
    event_topic: str
    fill: list[float]
    next_report: datetime
    seepage: bool = False
    alarm: bool = False
    fire_until: datetime | None = None
    fire_c: float = 0.0


@dataclass(slots=True)
class _Meter:
    device: Device
    topic: str
    kwh: float
    last_sim: datetime


@dataclass
class SimStats:
    """What the simulation has emitted, by label, and the faults it injected."""

    messages: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    # Knuth's method: exact and cheap for the small rates used here.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _crossed(prev: datetime, now: datetime, at_h: float) -> bool:
    """Whether the local time of day `at_h` (hours) passed in (prev, now]."""
    if now - prev >= timedelta(days=1):
        return True
    ph, nh = curves.hour_of(prev), curves.hour_of(now)
    if prev.date() == now.date():
        return ph < at_h <= nh
    return at_h > ph or at_h <= nh


class Simulation:
    """The fleet's devices with their state; `step` returns the messages due."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        prefix: str,
        start_real: datetime,
        start_sim: datetime | None = None,
        speed: float = 1.0,
        seed: int = 0,
        tz: str = "Asia/Shanghai",
        faults: FaultConfig | None = None,
    ) -> None:
        if start_real.tzinfo is None:
            raise ValueError("start_real must be timezone-aware")
        self.fleet = fleet
        self.prefix = prefix
        self.zone = zone(tz)
        self.speed = speed
        self.start_real = start_real
        self.start_sim = start_sim or start_real
        self.faults = faults or FaultConfig()
        # Not for security: seeded so that a run can be replayed.
        self.rng = random.Random(seed * 1_000_003 + 17)  # noqa: S311
        self.stats = SimStats()
        self._seq: dict[str, int] = {}
        self._events: Counter[str] = Counter()
        self._late: list[tuple[datetime, int, Outgoing]] = []
        self._late_n = 0
        self._silent: dict[str, datetime] = {}
        self._skew: dict[str, timedelta] = {}
        self._last_real = start_real
        self._last_sim = self.start_sim
        self._energy_minute = math.floor(start_real.timestamp() / 60)
        self._lots: list[_Lot] = []
        self._huts: list[_Hut] = []
        self._meters: list[_Meter] = []
        self._build()

    # -- clocks ---------------------------------------------------------------------

    def sim_time(self, real_now: datetime) -> datetime:
        """The simulated instant for a wall-clock instant."""
        return self.start_sim + (real_now - self.start_real) * self.speed

    def local(self, when: datetime) -> datetime:
        """An instant on the local wall clock."""
        return when.astimezone(self.zone)

    # -- set-up ---------------------------------------------------------------------

    def _build(self) -> None:
        rng, f = self.rng, self.faults
        local = self.local(self.start_sim)
        lots: dict[str, _Lot] = {}
        for d in self.fleet:
            if f.skew_rate and rng.random() < f.skew_rate:
                self._skew[d.device_id] = timedelta(seconds=rng.uniform(*f.skew_s))
            topic = topic_for(self.prefix, d.kind, d.device_id, "telemetry")
            # Spread first reports so a fleet does not report in lockstep forever after.
            if d.kind is Kind.PARKING:
                lot = lots.get(d.site)
                if lot is None:
                    lot = lots[d.site] = _Lot(d.business, d.lot_bias, [])
                p = self._occupancy(lot, local)
                lot.spaces.append(
                    _Space(d, topic, rng.random() < p, self.start_real, rng.uniform(-110, -70))
                )
            elif d.kind is Kind.WASTE:
                fill = [min(95.0, rng.uniform(5, 60) * d.fill_factor) for _ in d.categories]
                self._huts.append(
                    _Hut(
                        d,
                        topic,
                        topic_for(self.prefix, d.kind, d.device_id, "event"),
                        fill,
                        self.start_real,
                    )
                )
            else:
                self._meters.append(
                    _Meter(d, topic, round(rng.uniform(1e4, 5e6), 1), self.start_sim)
                )
        self._lots = list(lots.values())

    @staticmethod
    def _occupancy(lot: _Lot, local: datetime) -> float:
        return min(0.98, max(0.02, curves.parking_occupancy(lot.business, local) + lot.bias))

    def start(self) -> list[Outgoing]:
        """Retained `online` for every device, then every parking space and hut reports."""
        out = [self._status(d, online=True) for d in self.fleet]
        out.extend(self.step(self.start_real))
        return out

    def stop(self) -> list[Outgoing]:
        """Retained `offline` for every device still talking (the clean-stop will)."""
        return [
            self._status(d, online=False) for d in self.fleet if d.device_id not in self._silent
        ]

    # -- the step -------------------------------------------------------------------

    def step(self, real_now: datetime) -> list[Outgoing]:
        """Advance both clocks to `real_now` and return the messages due by then."""
        sim_now = self.sim_time(real_now)
        dt_h = max(0.0, (sim_now - self._last_sim).total_seconds() / 3600)
        dt_real_h = max(0.0, (real_now - self._last_real).total_seconds() / 3600)
        prev_local, local = self.local(self._last_sim), self.local(sim_now)
        out: list[Outgoing] = []
        self._device_faults(real_now, dt_real_h, out)
        self._step_parking(real_now, local, dt_h, out)
        self._step_waste(real_now, prev_local, local, dt_h, out)
        self._step_energy(real_now, sim_now, local, out)
        while self._late and self._late[0][0] <= real_now:
            out.append(heapq.heappop(self._late)[2])
        self._last_real, self._last_sim = real_now, sim_now
        for m in out:
            self.stats.messages[m.label] += 1
        return out

    def _step_parking(
        self, real_now: datetime, local: datetime, dt_h: float, out: list[Outgoing]
    ) -> None:
        rng = self.rng
        for lot in self._lots:
            p = self._occupancy(lot, local)
            mu = 1.0 / curves.parking_dwell_h(lot.business, local)
            lam = mu * p / (1.0 - p)
            p_leave = 1.0 - math.exp(-mu * dt_h)
            p_arrive = 1.0 - math.exp(-lam * dt_h)
            for s in lot.spaces:
                r = rng.random()
                changed = r < (p_leave if s.occupied else p_arrive)
                if changed:
                    s.occupied = not s.occupied
                if changed or real_now >= s.next_report:
                    d = s.device
                    body: dict[str, Any] = {
                        "ts": self._iso(d, real_now),
                        "occupied": s.occupied,
                        "battery_v": round(d.battery_v + rng.uniform(-0.01, 0.01), 3),
                        "rssi_dbm": round(s.rssi + rng.uniform(-3, 3), 1),
                    }
                    if self._emit(d, s.topic, body, real_now, out):
                        s.next_report = real_now + HEARTBEAT
            # A sensor now and then reports being tampered with (docs/wire.md, Events).
            if rng.random() < 0.0005 * len(lot.spaces) * dt_h:
                self._event(rng.choice(lot.spaces).device, "tamper", real_now, out)

    def _step_waste(
        self,
        real_now: datetime,
        prev_local: datetime,
        local: datetime,
        dt_h: float,
        out: list[Outgoing],
    ) -> None:
        rng = self.rng
        ambient = curves.ambient_c(local)
        mid = prev_local + (local - prev_local) / 2
        for hut in self._huts:
            d = hut.device
            windows = d.opening_hours or ()
            rate = curves.dropoff_factor(mid, windows) * d.fill_factor * dt_h
            for i, cat in enumerate(d.categories):
                if any(_crossed(prev_local, local, t) for t in curves.COLLECTIONS[cat]):
                    hut.fill[i] = rng.uniform(0.0, 3.0)
                    if cat == "wet":
                        hut.seepage = False
                added = curves.FILL_PER_OPEN_H[cat] * rate * rng.uniform(0.7, 1.3)
                hut.fill[i] = min(100.0, hut.fill[i] + added)
            for _ in range(_poisson(rng, curves.offhours_dropoffs_per_h(mid, windows) * dt_h)):
                i = rng.randrange(len(hut.fill))
                hut.fill[i] = min(100.0, hut.fill[i] + rng.uniform(0.5, 3.0))
                self._event(
                    d, "off_hours_dropoff", real_now, out, confidence=rng.uniform(0.7, 0.99)
                )
            if rng.random() < 0.002 * dt_h:
                self._event(d, "lid_jam", real_now, out)
            wet = max(
                (f for f, c in zip(hut.fill, d.categories, strict=True) if c == "wet"), default=0
            )
            if wet > 85 and not hut.seepage and rng.random() < 1 - math.exp(-0.3 * dt_h):
                hut.seepage = True
            if hut.fire_until is not None and real_now >= hut.fire_until:
                hut.fire_until = None
            body = self._hut_body(hut, ambient, wet, local, real_now)
            temp = body["temp_c"]
            gas = body["gas"]
            alarm = temp >= FIRE_C or hut.seepage or any(gas[k] >= v for k, v in GAS_ALARM.items())
            due = real_now >= hut.next_report or (alarm and not hut.alarm)
            if due and self._emit(d, hut.topic, body, real_now, out):
                hut.next_report = real_now + HUT_REPORT
            hut.alarm = alarm

    def _hut_body(
        self, hut: _Hut, ambient: float, wet: float, local: datetime, real_now: datetime
    ) -> dict[str, Any]:
        rng, d = self.rng, hut.device
        bins = [
            {
                "category": cat,
                "fill_pct": round(fill, 1),
                "weight_kg": round(fill / 100 * curves.FULL_BIN_KG[cat], 1),
            }
            for cat, fill in zip(d.categories, hut.fill, strict=True)
        ]
        # Rot makes gas, faster when warm; a few huts are worse than the rest.
        rot = wet * min(1.3, max(0.1, (ambient - 5) / 25)) * d.smell_factor
        temp = ambient + 2.0 + 0.02 * wet + rng.uniform(-0.3, 0.3)
        if hut.fire_until is not None:
            temp = hut.fire_c + rng.uniform(-2, 2)
        gas = {
            "h2s_ppm": round(0.05 + 0.05 * rot * rng.uniform(0.9, 1.1), 2),
            "nh3_ppm": round(0.5 + 0.18 * rot * rng.uniform(0.9, 1.1), 2),
            "ch4_pct_lel": round(min(100.0, 0.2 + 0.05 * rot * rng.uniform(0.9, 1.1)), 2),
        }
        door = rng.random() < (0.35 if curves.in_windows(local, d.opening_hours or ()) else 0.02)
        return {
            "ts": self._epoch_ms(d, real_now),
            "bins": bins,
            "gas": gas,
            "temp_c": round(temp, 1),
            "seepage": hut.seepage,
            "door_open": door,
            "battery_v": round(d.battery_v + rng.uniform(-0.05, 0.05), 2),
        }

    def _step_energy(
        self, real_now: datetime, sim_now: datetime, local: datetime, out: list[Outgoing]
    ) -> None:
        minute = math.floor(real_now.timestamp() / 60)
        if minute <= self._energy_minute:
            return
        self._energy_minute = minute
        # Meters report on the minute (docs/wire.md): the reading is stamped with it.
        on_the_minute = datetime.fromtimestamp(minute * 60, tz=real_now.tzinfo)
        rng = self.rng
        for m in self._meters:
            d = m.device
            contract = d.contract_kw or 1000.0
            power = contract * curves.building_load(d.profile or "office", local)
            power *= rng.uniform(0.97, 1.03)
            m.kwh += power * max(0.0, (sim_now - m.last_sim).total_seconds()) / 3600
            m.last_sim = sim_now
            body = {
                "ts": self._iso(d, on_the_minute),
                "active_power_kw": round(power, 2),
                "energy_kwh": round(m.kwh, 2),
                "voltage_v": round(225.0 + d.voltage_bias + rng.uniform(-1.5, 1.5), 1),
                "power_factor": round(min(1.0, d.power_factor + rng.uniform(-0.005, 0.005)), 3),
                "adjustable_kw": round(power * (0.15 if d.key_consumer else 0.03), 1),
            }
            self._emit(d, m.topic, body, real_now, out)

    # -- faults ---------------------------------------------------------------------

    def _device_faults(self, real_now: datetime, dt_real_h: float, out: list[Outgoing]) -> None:
        f, rng = self.faults, self.rng
        for device_id, until in list(self._silent.items()):
            if real_now >= until:
                del self._silent[device_id]
                device = self.fleet.get(device_id)
                if device is not None:
                    out.append(self._status(device, online=True))
        if not f.any or dt_real_h <= 0:
            return
        devices = self.fleet.devices
        for _ in range(_poisson(rng, f.silent_rate * len(devices) * dt_real_h)):
            d = rng.choice(devices)
            if d.device_id in self._silent:
                continue
            self._silent[d.device_id] = real_now + timedelta(seconds=rng.uniform(*f.silent_s))
            self.stats.faults["silent"] += 1
            # What the broker would publish as this device's will, had it a connection
            # of its own (docs/wire.md, Status).
            out.append(self._status(d, online=False))
        if self._huts:
            for _ in range(_poisson(rng, f.fire_rate * len(self._huts) * dt_real_h)):
                hut = rng.choice(self._huts)
                hut.fire_until = real_now + timedelta(seconds=rng.uniform(*f.fire_s))
                hut.fire_c = rng.uniform(62.0, 95.0)
                self.stats.faults["fire"] += 1
        if self._meters:
            for _ in range(_poisson(rng, f.reset_rate * len(self._meters) * dt_real_h)):
                rng.choice(self._meters).kwh = rng.uniform(0.0, 2.0)
                self.stats.faults["meter_reset"] += 1

    def _emit(
        self,
        device: Device,
        topic: str,
        body: dict[str, Any],
        real_now: datetime,
        out: list[Outgoing],
    ) -> bool:
        """Number, encode and queue one reading, with the message faults; False if silent."""
        if device.device_id in self._silent:
            return False
        seq = self._seq.get(device.device_id, 0) + 1
        self._seq[device.device_id] = seq
        body["seq"] = seq
        msg = Outgoing(topic, orjson.dumps(body))
        f, rng = self.faults, self.rng
        if f.late_rate and rng.random() < f.late_rate:
            release = real_now + timedelta(seconds=rng.uniform(*f.late_s))
            self._late_n += 1
            msg.label = "late"
            heapq.heappush(self._late, (release, self._late_n, msg))
        else:
            out.append(msg)
        if f.duplicate_rate and rng.random() < f.duplicate_rate:
            out.append(Outgoing(topic, msg.payload, label="duplicate"))
        if f.bad_rate and f.bad_reasons and rng.random() < f.bad_rate:
            reason = rng.choice(f.bad_reasons)
            bad_topic, payload = bad_message(reason, device, self.prefix, real_now, rng)
            out.append(Outgoing(bad_topic, payload, label=f"bad:{reason}"))
        return True

    def _event(
        self, device: Device, type_: str, real_now: datetime, out: list[Outgoing], **attrs: float
    ) -> None:
        if device.device_id in self._silent:
            return
        self._events[device.device_id] += 1
        n = self._events[device.device_id]
        ts_ms = int(real_now.timestamp() * 1000)
        # Unique per device across runs too: the collector de-duplicates on this id.
        body: dict[str, Any] = {
            "ts": self._epoch_ms(device, real_now),
            "type": type_,
            "id": f"{type_}-{ts_ms}-{n}",
        }
        body.update({k: round(v, 3) for k, v in attrs.items()})
        topic = topic_for(self.prefix, device.kind, device.device_id, "event")
        out.append(Outgoing(topic, orjson.dumps(body), label="event"))

    def _status(self, device: Device, *, online: bool) -> Outgoing:
        return Outgoing(
            topic_for(self.prefix, device.kind, device.device_id, "status"),
            b"online" if online else b"offline",
            retain=True,
            counted=False,
            label="status",
        )

    # -- timestamps -----------------------------------------------------------------

    def _iso(self, device: Device, when: datetime) -> str:
        skew = self._skew.get(device.device_id)
        if skew is not None:
            when = when + skew
        return when.astimezone(self.zone).isoformat(timespec="milliseconds")

    def _epoch_ms(self, device: Device, when: datetime) -> int:
        skew = self._skew.get(device.device_id)
        if skew is not None:
            when = when + skew
        return int(when.timestamp() * 1000)

    # -- for tests and the progress display -------------------------------------------

    def occupancy(self, *, business: bool | None = None) -> float:
        """The current share of occupied spaces, optionally by district type."""
        spaces = [s for lot in self._lots if business in (None, lot.business) for s in lot.spaces]
        return sum(s.occupied for s in spaces) / len(spaces) if spaces else 0.0

    def bin_fill(self, category: Category | None = None) -> float:
        """The current mean bin fill, optionally of one category."""
        fills = [
            f
            for hut in self._huts
            for f, c in zip(hut.fill, hut.device.categories, strict=True)
            if category in (None, c)
        ]
        return sum(fills) / len(fills) if fills else 0.0

    @property
    def silent(self) -> int:
        """Devices silent right now."""
        return len(self._silent)
