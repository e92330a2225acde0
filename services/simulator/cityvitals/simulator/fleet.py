"""The reference fleet (docs/simulator.md): Shanghai's 16 districts, their car parks, waste huts
and metered buildings, built deterministically from a seed and a scale.

Scale 1 is the laptop demo (about 300 devices); each unit of scale adds about 300
devices, so `--scale 100` is a 30,000-device megacity and `--scale 660` the
200,000-device benchmark fleet. Sites are dealt to the districts in turn, so from
scale 1 every district has each kind of site; below scale 1 the later districts get
none, which keeps test fleets tiny.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cityvitals.catalogue import DISTRICTS, District
from cityvitals.payloads import CATEGORIES, Category
from cityvitals.topics import DEVICE_ID_RE, Kind

# Approximate centres of the districts (WGS-84), for plausible device positions.
DISTRICT_CENTRES: dict[str, tuple[float, float]] = {
    "huangpu": (31.2317, 121.4846),
    "xuhui": (31.1886, 121.4365),
    "changning": (31.2204, 121.4242),
    "jingan": (31.2290, 121.4480),
    "putuo": (31.2495, 121.3972),
    "hongkou": (31.2646, 121.5050),
    "yangpu": (31.2596, 121.5260),
    "minhang": (31.1128, 121.3817),
    "baoshan": (31.4050, 121.4896),
    "jiading": (31.3747, 121.2655),
    "pudong": (31.2215, 121.5447),
    "jinshan": (30.7415, 121.3419),
    "songjiang": (31.0322, 121.2279),
    "qingpu": (31.1497, 121.1242),
    "fengxian": (30.9180, 121.4740),
    "chongming": (31.6230, 121.3972),
}

# docs/registry.md: waste huts open for drop-off 07:00-09:00 and 18:00-20:00 by default.
OPENING_HOURS: tuple[tuple[str, str], ...] = (("07:00", "09:00"), ("18:00", "20:00"))
# docs/indicators.md: the expected report intervals per kind.
REPORT_INTERVAL_S: dict[Kind, int] = {Kind.PARKING: 600, Kind.WASTE: 300, Kind.ENERGY: 60}

# Sites per unit of scale, city-wide (dealt to the 16 districts in turn).
LOTS_PER_SCALE = 16
COMPOUNDS_PER_SCALE = 16
BUILDINGS_PER_SCALE = 80

Profile = Literal["office", "mall", "factory", "residential", "datacenter", "hospital"]
# Building profiles: (share in business districts, share elsewhere, contract kW range).
PROFILES: dict[Profile, tuple[float, float, tuple[float, float]]] = {
    "office": (0.45, 0.15, (600.0, 3000.0)),
    "mall": (0.25, 0.15, (1500.0, 5000.0)),
    "residential": (0.10, 0.35, (300.0, 1200.0)),
    "factory": (0.0, 0.25, (2000.0, 8000.0)),
    "hospital": (0.10, 0.07, (1500.0, 4000.0)),
    "datacenter": (0.10, 0.03, (3000.0, 10000.0)),
}
PROFILE_ZH: dict[Profile, str] = {
    "office": "写字楼",
    "mall": "商场",
    "residential": "住宅楼",
    "factory": "工厂",
    "hospital": "医院",
    "datacenter": "数据中心",
}
# Key energy-using units (重点用能单位) are the large sites.
KEY_CONSUMER_KW = 2500.0


@dataclass(frozen=True, slots=True)
class Device:
    """One simulated device: its registry record (docs/registry.md) and the traits that drive it."""

    device_id: str
    kind: Kind
    district: str
    site: str
    name: str
    lat: float
    lon: float
    report_interval_s: int
    business: bool
    opening_hours: tuple[tuple[str, str], ...] | None = None
    key_consumer: bool = False
    contract_kw: float | None = None
    # waste: the hut's bins; how fast it fills; whether it smells more than most.
    categories: tuple[Category, ...] = ()
    fill_factor: float = 1.0
    smell_factor: float = 1.0
    # energy: building use, voltage and power-factor quirks.
    profile: Profile | None = None
    voltage_bias: float = 0.0
    power_factor: float = 0.95
    # parking: the lot's own lean towards full or empty.
    lot_bias: float = 0.0
    battery_v: float = 3.6

    def registry_record(self) -> dict[str, Any]:
        """The device as `POST /v1/devices/import` and the `devices` table take it."""
        return {
            "device_id": self.device_id,
            "kind": str(self.kind),
            "district": self.district,
            "site": self.site,
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "report_interval_s": self.report_interval_s,
            "opening_hours": [list(w) for w in self.opening_hours] if self.opening_hours else None,
            "key_consumer": self.key_consumer,
            "contract_kw": self.contract_kw,
        }


@dataclass(frozen=True)
class Fleet:
    """All devices of one simulated city."""

    seed: int
    scale: float
    devices: tuple[Device, ...]
    _by_id: dict[str, Device] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update((d.device_id, d) for d in self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def get(self, device_id: str) -> Device | None:
        """A device by id."""
        return self._by_id.get(device_id)

    def of_kind(self, kind: Kind | str) -> list[Device]:
        """The devices of one kind, in fleet order."""
        return [d for d in self.devices if d.kind == kind]

    def ids(self, kind: Kind | str | None = None) -> list[str]:
        """Device ids, of one kind or all."""
        return [d.device_id for d in self.devices if kind is None or d.kind == kind]

    def counts(self) -> dict[str, int]:
        """Devices per kind."""
        return dict(Counter(str(d.kind) for d in self.devices))

    def sites(self) -> dict[str, int]:
        """Sites per kind."""
        seen = {(str(d.kind), d.site) for d in self.devices}
        return dict(Counter(kind for kind, _ in seen))


def _deal(total: int) -> Iterator[tuple[District, int]]:
    """Deal `total` sites to the districts in turn: (district, 1-based site number)."""
    per: Counter[str] = Counter()
    for i in range(total):
        district = DISTRICTS[i % len(DISTRICTS)]
        per[district.id] += 1
        yield district, per[district.id]


def _place(rng: random.Random, district: str, spread: float = 0.03) -> tuple[float, float]:
    lat, lon = DISTRICT_CENTRES[district]
    return round(lat + rng.uniform(-spread, spread), 6), round(
        lon + rng.uniform(-spread, spread), 6
    )


def _count(per_scale: int, scale: float) -> int:
    return max(1, round(per_scale * scale))


def build_fleet(seed: int = 0, scale: float = 1.0) -> Fleet:
    """The reference fleet for a seed and scale; the same arguments give the same fleet."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    # Not for security: a seeded generator makes the fleet reproducible.
    rng = random.Random(seed)  # noqa: S311
    devices: list[Device] = []
    for district, n in _deal(_count(LOTS_PER_SCALE, scale)):
        devices.extend(_parking_lot(rng, district, n))
    for district, n in _deal(_count(COMPOUNDS_PER_SCALE, scale)):
        devices.extend(_compound(rng, district, n))
    for district, n in _deal(_count(BUILDINGS_PER_SCALE, scale)):
        devices.append(_building(rng, district, n))
    for d in devices:
        assert DEVICE_ID_RE.fullmatch(d.device_id), d.device_id  # noqa: S101
    return Fleet(seed, scale, tuple(devices))


def _parking_lot(rng: random.Random, district: District, n: int) -> list[Device]:
    site = f"pk-{district.id}-{n:04d}"
    spaces = rng.randint(8, 16)
    bias = rng.uniform(-0.08, 0.08)
    lat, lon = _place(rng, district.id)
    out = []
    for s in range(1, spaces + 1):
        # A few sensors ship with tired batteries, so the low-battery count is not zero.
        battery = rng.uniform(3.15, 3.3) if rng.random() < 0.03 else rng.uniform(3.4, 3.65)
        out.append(
            Device(
                device_id=f"{site}-{s:03d}",
                kind=Kind.PARKING,
                district=district.id,
                site=site,
                name=f"{district.name_zh}停车场{n}号 {s}号泊位 / {district.name_en} car park {n} "
                f"space {s}",
                lat=round(lat + rng.uniform(-0.0004, 0.0004), 6),
                lon=round(lon + rng.uniform(-0.0004, 0.0004), 6),
                report_interval_s=REPORT_INTERVAL_S[Kind.PARKING],
                business=district.business,
                lot_bias=bias,
                battery_v=round(battery, 3),
            )
        )
    return out


def _compound(rng: random.Random, district: District, n: int) -> list[Device]:
    site = f"ws-{district.id}-{n:04d}"
    lat, lon = _place(rng, district.id)
    out = []
    for h in range(1, rng.randint(1, 3) + 1):
        nbins = rng.randint(1, 8)
        # Every hut takes the four sorted streams when it has room; wet and dry first.
        cats = tuple(
            CATEGORIES[i % 4] if i < 4 else rng.choice(CATEGORIES[:3]) for i in range(nbins)
        )
        out.append(
            Device(
                device_id=f"{site}-{h:02d}",
                kind=Kind.WASTE,
                district=district.id,
                site=site,
                name=f"{district.name_zh}小区{n}号 垃圾厢房{h} / {district.name_en} compound {n} "
                f"hut {h}",
                lat=round(lat + rng.uniform(-0.001, 0.001), 6),
                lon=round(lon + rng.uniform(-0.001, 0.001), 6),
                report_interval_s=REPORT_INTERVAL_S[Kind.WASTE],
                business=district.business,
                opening_hours=OPENING_HOURS,
                categories=tuple(sorted(cats, key=CATEGORIES.index)),
                fill_factor=rng.uniform(0.6, 1.6),
                smell_factor=3.0 if rng.random() < 0.05 else rng.uniform(0.6, 1.2),
                battery_v=round(rng.uniform(12.0, 12.8), 2),
            )
        )
    return out


def _building(rng: random.Random, district: District, n: int) -> Device:
    names: Sequence[Profile] = list(PROFILES)
    weights = [PROFILES[p][0] if district.business else PROFILES[p][1] for p in names]
    profile = rng.choices(names, weights)[0]
    low, high = PROFILES[profile][2]
    contract = round(rng.uniform(low, high), -1)
    site = f"em-{district.id}-{n:04d}"
    lat, lon = _place(rng, district.id)
    return Device(
        device_id=f"{site}-01",
        kind=Kind.ENERGY,
        district=district.id,
        site=site,
        name=f"{district.name_zh}{PROFILE_ZH[profile]}{n}号 / {district.name_en} {profile} {n}",
        lat=lat,
        lon=lon,
        report_interval_s=REPORT_INTERVAL_S[Kind.ENERGY],
        business=district.business,
        key_consumer=contract >= KEY_CONSUMER_KW,
        contract_kw=contract,
        profile=profile,
        # 2 % of sites sit on a feeder with high voltage; 6 % run a poor power factor.
        voltage_bias=rng.uniform(14.0, 20.0) if rng.random() < 0.02 else rng.uniform(-3.0, 5.0),
        power_factor=rng.uniform(0.82, 0.89) if rng.random() < 0.06 else rng.uniform(0.92, 0.99),
    )
