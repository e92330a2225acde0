"""The indicator catalogue (docs/indicators.md) as data: the one place the API, /metrics,
alerts, dashboards, docs and the screen read ids, names, units, levels and thresholds.

Thresholds are defaults; a deployment overrides them with a JSON file
(`CITYVITALS_THRESHOLDS_FILE`, see `with_overrides`).
"""

from __future__ import annotations

import enum
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal


class Status(enum.IntEnum):
    """An indicator's status; larger is worse."""

    NORMAL = 0
    ATTENTION = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """The status as the API spells it."""
        return self.name.lower()


Domain = Literal["parking", "waste", "energy", "devices"]
Level = Literal["city", "district", "site"]
# `ge`: the status applies when value >= bound; `lt`: when value < bound.
Direction = Literal["ge", "lt"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Bounds per status, worst first when evaluated."""

    direction: Direction
    attention: float | None = None
    warning: float | None = None
    critical: float | None = None

    def status(self, value: float | None) -> Status:
        """The status of a value; `None` (no data) is normal."""
        if value is None:
            return Status.NORMAL
        for status, bound in (
            (Status.CRITICAL, self.critical),
            (Status.WARNING, self.warning),
            (Status.ATTENTION, self.attention),
        ):
            if bound is None:
                continue
            if (self.direction == "ge" and value >= bound) or (
                self.direction == "lt" and value < bound
            ):
                return status
        return Status.NORMAL

    def bound(self, status: Status) -> float | None:
        """The bound of one status."""
        return {
            Status.ATTENTION: self.attention,
            Status.WARNING: self.warning,
            Status.CRITICAL: self.critical,
        }.get(status)


@dataclass(frozen=True, slots=True)
class Indicator:
    """One city vital sign."""

    id: str
    domain: Domain
    name_zh: str
    name_en: str
    unit: str
    levels: tuple[Level, ...]
    # Thresholds on the indicator's own value (city/district/site figure).
    thresholds: Thresholds | None = None
    # Thresholds per counted entity (hut, meter, site): the indicator takes the worst
    # status among its entities, and crossings open alerts (docs/indicators.md, Alerts).
    entity_thresholds: Thresholds | None = None
    formula: str = ""
    # Named limits of the formula that are not a ladder of statuses (the occupancy from
    # which a lot counts as near full, each gas's limits, the voltage band, the battery
    # voltage): overridden like the thresholds, read by the counts and the statuses.
    params: Mapping[str, float] = field(default_factory=dict, hash=False)

    def param(self, name: str) -> float:
        """One named limit of the formula."""
        return self.params[name]

    def served(self, value: float | None) -> float | int | None:
        """The value as served: rounded to the precision of the indicator's unit."""
        return rounded(value, self.unit)


def _i(
    id_: str,
    zh: str,
    en: str,
    unit: str,
    levels: tuple[Level, ...],
    formula: str,
    thresholds: Thresholds | None = None,
    entity: Thresholds | None = None,
    params: Mapping[str, float] | None = None,
) -> Indicator:
    domain: Domain = id_.split(".", 1)[0]  # type: ignore[assignment]
    return Indicator(
        id_, domain, zh, en, unit, levels, thresholds, entity, formula, dict(params or {})
    )


CDS: tuple[Level, ...] = ("city", "district", "site")
CD: tuple[Level, ...] = ("city", "district")
C: tuple[Level, ...] = ("city",)

CATALOGUE: tuple[Indicator, ...] = (
    # Parking 停车
    _i(
        "parking.occupancy_ratio",
        "泊位占用率",
        "Parking occupancy",
        "ratio",
        CDS,
        "occupied ÷ online sensors",
        Thresholds("ge", attention=0.85, warning=0.95),
    ),
    _i(
        "parking.free_spaces",
        "空余泊位",
        "Free parking spaces",
        "count",
        CDS,
        "online sensors reporting free",
    ),
    _i(
        "parking.lots_near_full",
        "饱和停车场",
        "Lots near full",
        "count",
        CD,
        "lots with occupancy ≥ 0.90",
        params={"lot_occupancy": 0.90},
    ),
    _i(
        "parking.turnover_24h",
        "泊位周转率",
        "Space turnover (24 h)",
        "per space",
        CD,
        "free→occupied transitions in the last 24 h ÷ online sensors",
    ),
    # Waste 垃圾厢房
    _i(
        "waste.fill_pct_mean",
        "平均满溢度",
        "Mean bin fill",
        "%",
        CDS,
        "mean latest fill_pct over bins of online huts",
        Thresholds("ge", attention=70, warning=85),
    ),
    _i(
        "waste.huts_full",
        "满溢厢房",
        "Full waste huts",
        "count",
        CD,
        "huts with any bin fill_pct ≥ 80",
        None,
        Thresholds("ge", attention=80, warning=90, critical=100),
    ),
    _i(
        "waste.gas_alarms",
        "有害气体超标",
        "Harmful gas alarms",
        "count",
        CD,
        "huts with h2s_ppm ≥ 10 or nh3_ppm ≥ 25 or ch4_pct_lel ≥ 10",
        # Per hut: warning from each gas's limit, critical from its `_critical` limit.
        params={
            "h2s_ppm": 10.0,
            "nh3_ppm": 25.0,
            "ch4_pct_lel": 10.0,
            "h2s_ppm_critical": 15.0,
            "nh3_ppm_critical": 35.0,
            "ch4_pct_lel_critical": 25.0,
        },
    ),
    _i(
        "waste.fire_risk",
        "火灾风险",
        "Fire risk",
        "count",
        CD,
        "huts with temp_c ≥ 60",
        None,
        Thresholds("ge", critical=60),
    ),
    _i("waste.seepage", "渗漏", "Seepage", "count", CD, "huts reporting seepage"),
    _i(
        "waste.offhours_dropoffs_today",
        "非投放时段投放",
        "Off-hours drop-offs today",
        "count",
        CDS,
        "off_hours_dropoff events since local midnight",
    ),
    _i(
        "waste.deposited_kg_today",
        "今日分类投放量",
        "Sorted waste deposited today",
        "kg",
        CD,
        "sum of positive weight_kg increases per bin since local midnight, by category",
    ),
    # Energy 能源
    _i(
        "energy.load_kw",
        "实时负荷",
        "Current load",
        "kW",
        CDS,
        "Σ latest active_power_kw of online meters",
    ),
    _i(
        "energy.consumption_kwh_today",
        "今日用电量",
        "Electricity used today",
        "kWh",
        CDS,
        "Σ per meter (latest energy_kwh - first energy_kwh since local midnight)",
    ),
    _i(
        "energy.peak_load_kw_today",
        "今日峰值负荷",
        "Peak load today",
        "kW",
        CD,
        "max of the 1-minute load since local midnight",
    ),
    _i(
        "energy.co2_t_today",
        "今日碳排放",
        "CO₂ emitted today",
        "t CO2",
        CD,
        "consumption x grid emission factor",
    ),
    _i(
        "energy.adjustable_kw",
        "可调负荷",
        "Adjustable load",
        "kW",
        CD,
        "Σ latest adjustable_kw of online meters",
    ),
    _i(
        "energy.low_power_factor",
        "功率因数偏低",
        "Low power factor",
        "count",
        CD,
        "meters with power_factor < 0.90",
        None,
        Thresholds("lt", attention=0.90),
    ),
    _i(
        "energy.voltage_deviation",
        "电压越限",
        "Voltage out of limits",
        "count",
        CD,
        "meters with phase voltage outside 220 V -10 % / +7 %",
        # Per meter: warning outside [nominal - below %, nominal + above %].
        params={"nominal_v": 220.0, "below_pct": 10.0, "above_pct": 7.0},
    ),
    _i(
        "energy.key_consumer_monitoring_rate",
        "重点用能单位在线监测率",
        "Key consumers monitored online",
        "ratio",
        CD,
        "online key_consumer meters ÷ registered key_consumer meters",
        Thresholds("lt", attention=0.95, warning=0.90),
    ),
    # Devices 设备运行
    _i(
        "devices.online_ratio",
        "设备在线率",
        "Devices online",
        "ratio",
        CD,
        "online ÷ registered, per kind",
        Thresholds("lt", attention=0.95, warning=0.90, critical=0.70),
    ),
    _i(
        "devices.completeness_1h",
        "数据完整率",
        "Data completeness (1 h)",
        "ratio",
        CD,
        "received ÷ expected (from seq gaps) over the last hour",
        Thresholds("lt", attention=0.99, warning=0.95),
    ),
    _i(
        "devices.low_battery",
        "低电量设备",
        "Devices with low battery",
        "count",
        CD,
        "battery-powered devices below the kind's threshold (parking 3.3 V)",
        # `<kind>_v`: the kind's threshold; a kind without one counts no device.
        params={"parking_v": 3.3},
    ),
    _i(
        "devices.ingest_lag_p95_s",
        "数据时延",
        "Ingest lag (p95)",
        "s",
        C,
        "p95 of (stored time - device ts) over the last 5 minutes",
        Thresholds("ge", attention=5, warning=30),
    ),
    _i(
        "devices.unassigned",
        "未登记设备",
        "Unregistered devices",
        "count",
        C,
        "auto-registered devices without a district",
        Thresholds("ge", attention=1),
    ),
    _i(
        "devices.rejected_ratio_10m",
        "报文拒收率",
        "Rejected messages (10 min)",
        "ratio",
        C,
        "rejected ÷ received over the last 10 minutes",
        Thresholds("ge", attention=0.01, warning=0.05),
    ),
)

BY_ID: dict[str, Indicator] = {i.id: i for i in CATALOGUE}

# Decimal places a served value keeps, per unit: a precision that fits the unit
# (docs/indicators.md, Rounding). Counts are whole numbers. Coverage is served as a
# ratio and data ages in seconds.
DECIMALS: dict[str, int] = {
    "ratio": 4,
    "per space": 4,
    "count": 0,
    "%": 1,
    "kW": 2,
    "kWh": 2,
    "kg": 2,
    "t CO2": 3,
    "s": 2,
}
_UNROUNDED = sorted({i.unit for i in CATALOGUE} - DECIMALS.keys())
if _UNROUNDED:
    raise RuntimeError(f"catalogue units without a precision in DECIMALS: {_UNROUNDED}")


def rounded(value: float | None, unit: str) -> float | int | None:
    """A value rounded to its unit's precision: counts as integers, NaN and infinities as
    None (JSON has neither), and never a negative zero."""
    if value is None or not math.isfinite(value):
        return None
    places = DECIMALS[unit]
    if places == 0:
        return round(value)
    # Adding 0.0 turns the -0.0 that rounding a tiny negative value gives into 0.0.
    return round(value, places) + 0.0


# The gases of a waste hut, as `waste.gas_alarms` names their limits.
GASES = ("h2s_ppm", "nh3_ppm", "ch4_pct_lel")
# Per-site load thresholds as fractions of the site's contract_kw, the default of
# `energy.load_kw`'s per-entity thresholds (`entity` in a thresholds file).
LOAD_ATTENTION_OF_CONTRACT = 0.9
LOAD_WARNING_OF_CONTRACT = 1.0
# Per-entity thresholds that are not in an entry because they are relative (a share of
# each site's contract); a partial `entity` override starts from these.
ENTITY_DEFAULTS = {
    "energy.load_kw": Thresholds(
        "ge", attention=LOAD_ATTENTION_OF_CONTRACT, warning=LOAD_WARNING_OF_CONTRACT
    )
}
# Default report intervals (seconds) per kind; a device is online while its last
# message is younger than ONLINE_FACTOR intervals.
REPORT_INTERVAL_S = {"parking": 600, "waste": 300, "energy": 60}
ONLINE_FACTOR = 3
STALE_COVERAGE = 0.8
STALE_INTERVALS = 3


_BOUNDS = ("attention", "warning", "critical")


def _bounds(where: str, spec: object, base: Thresholds) -> Thresholds:
    """`base` with the bounds of `spec` replaced, checked: numbers, known keys, in order."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected an object of bounds, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_BOUNDS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (bounds are {list(_BOUNDS)})")
    for key, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    values = {k: float(v) for k, v in spec.items()}
    merged = Thresholds(
        base.direction,
        attention=values.get("attention", base.attention),
        warning=values.get("warning", base.warning),
        critical=values.get("critical", base.critical),
    )
    set_bounds = [(k, getattr(merged, k)) for k in _BOUNDS if getattr(merged, k) is not None]
    for (k1, v1), (k2, v2) in itertools.pairwise(set_bounds):
        worse = v2 >= v1 if merged.direction == "ge" else v2 <= v1
        if not worse:
            raise ValueError(
                f"{where}: {k2} ({v2}) must be {'above' if merged.direction == 'ge' else 'below'}"
                f" {k1} ({v1})"
            )
    return merged


def with_overrides(path: str | Path | None) -> dict[str, Indicator]:
    """The catalogue with thresholds replaced from a JSON file.

    The file maps indicator ids to `{"attention": x, "warning": y, "critical": z}`,
    optionally with `"entity": {...}` for per-entity thresholds and `"params": {...}`
    for the formula's named limits (`Indicator.params`; only those it has). Anything
    else — an unknown id or key, a value that is not a number, bounds out of order —
    is a ValueError naming the indicator and the key.
    """
    if path is None:
        return dict(BY_ID)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of indicator ids")
    result = dict(BY_ID)
    for ind_id, raw in data.items():
        if ind_id not in result:
            raise ValueError(f"thresholds file names unknown indicator {ind_id!r}")
        if not isinstance(raw, dict):
            raise ValueError(f"{ind_id}: expected an object, got {type(raw).__name__}")
        ind = result[ind_id]
        spec = dict(raw)
        entity = spec.pop("entity", None)
        params = spec.pop("params", None)
        if params is not None:
            if not isinstance(params, dict):
                raise ValueError(f"{ind_id}.params: expected an object")
            unknown = sorted(set(params) - set(ind.params))
            if unknown:
                raise ValueError(
                    f"thresholds file names parameters {unknown} that {ind_id!r} does not "
                    f"have (it has {sorted(ind.params)})"
                )
            for key, value in params.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{ind_id}.params.{key}: expected a number, got {value!r}")
            ind = replace(ind, params={**ind.params, **{k: float(v) for k, v in params.items()}})
        if spec:
            ind = replace(ind, thresholds=_bounds(ind_id, spec, ind.thresholds or Thresholds("ge")))
        if entity is not None:
            base = ind.entity_thresholds or ENTITY_DEFAULTS.get(ind_id) or Thresholds("ge")
            ind = replace(ind, entity_thresholds=_bounds(f"{ind_id}.entity", entity, base))
        result[ind_id] = ind
    return result


# The 16 districts of Shanghai (docs/simulator.md), with the kind of place each is; the
# simulator uses `business` to shape parking curves.
@dataclass(frozen=True, slots=True)
class District:
    """A district of the city."""

    id: str
    name_zh: str
    name_en: str
    business: bool


DISTRICTS: tuple[District, ...] = (
    District("huangpu", "黄浦", "Huangpu", True),
    District("xuhui", "徐汇", "Xuhui", True),
    District("changning", "长宁", "Changning", True),
    District("jingan", "静安", "Jing'an", True),
    District("putuo", "普陀", "Putuo", False),
    District("hongkou", "虹口", "Hongkou", False),
    District("yangpu", "杨浦", "Yangpu", False),
    District("minhang", "闵行", "Minhang", False),
    District("baoshan", "宝山", "Baoshan", False),
    District("jiading", "嘉定", "Jiading", False),
    District("pudong", "浦东新区", "Pudong", True),
    District("jinshan", "金山", "Jinshan", False),
    District("songjiang", "松江", "Songjiang", False),
    District("qingpu", "青浦", "Qingpu", False),
    District("fengxian", "奉贤", "Fengxian", False),
    District("chongming", "崇明", "Chongming", False),
)
DISTRICT_BY_ID: dict[str, District] = {d.id: d for d in DISTRICTS}
