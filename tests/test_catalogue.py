"""The indicator catalogue against docs/indicators.md: ids, names, units, levels and
thresholds; statuses at and around every bound; rounding per unit; and the thresholds
file a deployment overrides the defaults with."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityvitals.catalogue import (
    BY_ID,
    CATALOGUE,
    DECIMALS,
    DISTRICTS,
    GASES,
    LOAD_ATTENTION_OF_CONTRACT,
    LOAD_WARNING_OF_CONTRACT,
    Indicator,
    Status,
    Thresholds,
    rounded,
    with_overrides,
)

DOC = (Path(__file__).parents[1] / "docs" / "indicators.md").read_text(encoding="utf-8")
LEVELS = {"C": "city", "D": "district", "S": "site"}
LADDER = (Status.ATTENTION, Status.WARNING, Status.CRITICAL)
NUMBER = r"(\d+(?:\.\d+)?)"
BOUND = re.compile(rf"(attention|warning|critical) (≥|<) {NUMBER}")
COMPARISON = re.compile(rf"(≥|<) {NUMBER}")


def section(title: str) -> str:
    """The text of one `## ` section of the page."""
    start = DOC.index(f"\n{title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end >= 0 else len(DOC)]


@dataclass(frozen=True)
class Row:
    """One row of the page's catalogue tables."""

    id: str
    zh: str
    en: str
    formula: str
    unit: str
    levels: tuple[str, ...]
    thresholds: str


def _rows() -> list[Row]:
    rows = []
    for line in section("## The catalogue").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 7, line
        id_, zh, en, formula, unit, levels, thresholds = cells
        rows.append(
            Row(
                id_.strip("`"),
                zh,
                en,
                formula,
                unit,
                tuple(LEVELS[level] for level in levels.split()),
                thresholds,
            )
        )
    return rows


ROWS = _rows()
ROW_IDS = [row.id for row in ROWS]


def _ladders() -> list[tuple[str, str, Thresholds]]:
    found = []
    for ind in CATALOGUE:
        if ind.thresholds is not None:
            found.append((ind.id, "own", ind.thresholds))
        if ind.entity_thresholds is not None:
            found.append((ind.id, "entity", ind.entity_thresholds))
    return found


LADDERS = _ladders()
LADDER_IDS = [f"{id_}:{which}" for id_, which, _ in LADDERS]


def defined(th: Thresholds) -> list[tuple[Status, float]]:
    """The statuses a ladder has, mildest first, with their bounds."""
    return [(s, b) for s in LADDER if (b := th.bound(s)) is not None]


def milder(th: Thresholds, status: Status) -> Status:
    """The status on the far side of `status`'s bound: the next milder one the ladder has."""
    below = [s for s, _ in defined(th) if s < status]
    return max(below, default=Status.NORMAL)


def expected_status(th: Thresholds, value: float) -> Status:
    """The worst status whose bound the value crosses."""
    crossed = [
        s
        for s, b in defined(th)
        if (th.direction == "ge" and value >= b) or (th.direction == "lt" and value < b)
    ]
    return max(crossed, default=Status.NORMAL)


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# What the page lists


def test_every_indicator_of_the_page_is_in_the_catalogue_exactly_once() -> None:
    assert len(ROWS) == 25
    assert Counter(ind.id for ind in CATALOGUE) == Counter(ROW_IDS)
    assert max(Counter(ROW_IDS).values()) == 1
    assert BY_ID.keys() == set(ROW_IDS)


def test_catalogue_lists_the_indicators_in_the_order_of_the_page() -> None:
    assert [ind.id for ind in CATALOGUE] == ROW_IDS


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_indicator_has_the_names_unit_and_levels_of_the_page(row: Row) -> None:
    ind = BY_ID[row.id]
    assert (ind.name_zh, ind.name_en, ind.unit, ind.levels) == (
        row.zh,
        row.en,
        row.unit,
        row.levels,
    )


@pytest.mark.parametrize("ind", CATALOGUE, ids=[i.id for i in CATALOGUE])
def test_indicator_is_well_formed(ind: Indicator) -> None:
    domain, _, name = ind.id.partition(".")
    assert ind.domain == domain
    assert domain in ("parking", "waste", "energy", "devices")
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert any("\u4e00" <= c <= "\u9fff" for c in ind.name_zh), ind.name_zh
    assert ind.name_en.strip() == ind.name_en != ""
    assert ind.formula
    assert ind.unit in DECIMALS
    # Every figure is computed for the city; the levels keep city → district → site.
    assert ind.levels[0] == "city"
    assert list(ind.levels) == [lv for lv in ("city", "district", "site") if lv in ind.levels]


@pytest.mark.parametrize("ind", CATALOGUE, ids=[i.id for i in CATALOGUE])
def test_indicator_is_in_the_domain_section_of_the_page(ind: Indicator) -> None:
    titles = {"parking": "Parking", "waste": "Waste", "energy": "Energy", "devices": "Devices"}
    start = DOC.index(f"\n### {titles[ind.domain]} ")
    end = DOC.index("\n##", start + 1)
    assert f"| `{ind.id}` |" in DOC[start:end]


def _documented(row: Row) -> tuple[Thresholds | None, Thresholds | None]:
    """The figure's and the per-entity thresholds as the page's last column states them."""
    bounds = BOUND.findall(row.thresholds)
    per_entity = row.thresholds.startswith("per ")
    if bounds:
        directions = {op for _, op, _ in bounds}
        assert len(directions) == 1, row.thresholds
        direction: Literal["ge", "lt"] = "ge" if directions == {"≥"} else "lt"
        th = Thresholds(direction, **{name: float(n) for name, _, n in bounds})
        return (None, th) if per_entity else (th, None)
    if per_entity:
        # "per hut: critical": the status of the formula's one comparison.
        statuses = re.findall(r"\b(attention|warning|critical)\b", row.thresholds)
        comparisons = COMPARISON.findall(row.formula)
        if len(statuses) == 1 and len(comparisons) == 1:
            op, n = comparisons[0]
            return None, Thresholds("ge" if op == "≥" else "lt", **{statuses[0]: float(n)})
    return None, None


# energy.load_kw is judged per site against the site's contract (its own test below);
# the gas limits and the voltage band are formula parameters (their own tests below).
LADDER_ROWS = [
    r
    for r in ROWS
    if r.id not in ("energy.load_kw", "waste.gas_alarms", "energy.voltage_deviation")
]


@pytest.mark.parametrize("row", LADDER_ROWS, ids=[r.id for r in LADDER_ROWS])
def test_indicator_thresholds_are_those_of_the_page(row: Row) -> None:
    ind = BY_ID[row.id]
    assert (ind.thresholds, ind.entity_thresholds) == _documented(row)


def test_site_load_is_judged_against_the_contract_as_the_page_says() -> None:
    row = ROWS[ROW_IDS.index("energy.load_kw")]
    # Shares of the contract; a bound of a bare `contract_kw` is the whole contract.
    shares = {
        status: float(n or 1)
        for status, n in re.findall(
            rf"(attention|warning) ≥ (?:{NUMBER} . )?`contract_kw`", row.thresholds
        )
    }
    assert shares == {"attention": 0.9, "warning": 1.0}
    assert shares["attention"] == LOAD_ATTENTION_OF_CONTRACT
    assert shares["warning"] == LOAD_WARNING_OF_CONTRACT
    assert BY_ID["energy.load_kw"].thresholds is None


def test_gas_limits_are_those_of_the_page() -> None:
    row = ROWS[ROW_IDS.index("waste.gas_alarms")]
    warning = {g: float(n) for g, n in re.findall(rf"`(\w+)` ≥ {NUMBER}", row.formula)}
    critical = {g: float(n) for g, n in re.findall(rf"`(\w+)` ≥ {NUMBER}", row.thresholds)}
    gas = BY_ID["waste.gas_alarms"]
    assert set(warning) == set(critical) == set(GASES)
    assert {g: gas.param(g) for g in GASES} == warning
    assert {g: gas.param(f"{g}_critical") for g in GASES} == critical
    assert all(critical[g] > warning[g] for g in GASES)


def test_voltage_band_is_that_of_the_page() -> None:
    volt = BY_ID["energy.voltage_deviation"]
    nominal = volt.param("nominal_v")
    assert (nominal, volt.param("below_pct"), volt.param("above_pct")) == (220, 10, 7)
    assert nominal * (1 - volt.param("below_pct") / 100) == pytest.approx(198)
    assert nominal * (1 + volt.param("above_pct") / 100) == pytest.approx(235.4)


def test_count_limits_are_those_of_the_page() -> None:
    assert BY_ID["parking.lots_near_full"].param("lot_occupancy") == 0.90
    assert BY_ID["devices.low_battery"].params == {"parking_v": 3.3}


# Statuses


def test_statuses_are_ordered_from_normal_to_critical_and_spelt_lowercase() -> None:
    assert sorted(Status) == [Status.NORMAL, Status.ATTENTION, Status.WARNING, Status.CRITICAL]
    assert [s.label for s in Status] == ["normal", "attention", "warning", "critical"]


@pytest.mark.parametrize(("id_", "which", "th"), LADDERS, ids=LADDER_IDS)
def test_thresholds_are_ordered_as_their_statuses_require(
    id_: str, which: str, th: Thresholds
) -> None:
    bounds = [b for _, b in defined(th)]
    assert bounds, f"{id_} has an empty {which} ladder"
    if th.direction == "ge":
        assert bounds == sorted(set(bounds)), f"{id_} {which}: attention < warning < critical"
    else:
        assert bounds == sorted(set(bounds), reverse=True), (
            f"{id_} {which}: attention > warning > critical"
        )


@pytest.mark.parametrize(("id_", "which", "th"), LADDERS, ids=LADDER_IDS)
def test_status_changes_exactly_at_each_bound(id_: str, which: str, th: Thresholds) -> None:
    for status, bound in defined(th):
        below = math.nextafter(bound, -math.inf)
        above = math.nextafter(bound, math.inf)
        if th.direction == "ge":
            # "≥": the bound itself is already the status.
            assert th.status(bound) is status
            assert th.status(above) is status
            assert th.status(below) is milder(th, status)
        else:
            # "<": the bound itself is not yet the status.
            assert th.status(bound) is milder(th, status)
            assert th.status(above) is milder(th, status)
            assert th.status(below) is status


@pytest.mark.parametrize(("id_", "which", "th"), LADDERS, ids=LADDER_IDS)
def test_no_data_is_normal(id_: str, which: str, th: Thresholds) -> None:
    assert th.status(None) is Status.NORMAL


@pytest.mark.parametrize(("id_", "which", "th"), LADDERS, ids=LADDER_IDS)
def test_values_far_on_either_side_take_the_ends_of_the_ladder(
    id_: str, which: str, th: Thresholds
) -> None:
    worst = defined(th)[-1][0]
    good, bad = (-1e12, 1e12) if th.direction == "ge" else (1e12, -1e12)
    assert th.status(good) is Status.NORMAL
    assert th.status(bad) is worst


@given(
    ladder=st.sampled_from(LADDERS),
    value=st.floats(allow_nan=False, allow_infinity=True),
)
def test_status_is_the_worst_status_whose_bound_the_value_crosses(
    ladder: tuple[str, str, Thresholds], value: float
) -> None:
    _, _, th = ladder
    assert th.status(value) is expected_status(th, value)


@given(
    ladder=st.sampled_from(LADDERS),
    a=st.floats(allow_nan=False),
    b=st.floats(allow_nan=False),
)
def test_status_only_worsens_in_the_direction_of_the_thresholds(
    ladder: tuple[str, str, Thresholds], a: float, b: float
) -> None:
    _, _, th = ladder
    low, high = sorted((a, b))
    if th.direction == "ge":
        assert th.status(low) <= th.status(high)
    else:
        assert th.status(low) >= th.status(high)


def test_bound_of_each_status_is_its_threshold_and_normal_has_none() -> None:
    th = Thresholds("lt", attention=0.95, warning=0.90, critical=0.70)
    assert th.bound(Status.NORMAL) is None
    assert [th.bound(s) for s in LADDER] == [0.95, 0.90, 0.70]


def test_a_ladder_without_an_intermediate_status_skips_it() -> None:
    th = BY_ID["waste.fire_risk"].entity_thresholds
    assert th == Thresholds("ge", critical=60)
    assert th.status(59.9) is Status.NORMAL
    assert th.status(60) is Status.CRITICAL


# Rounding


def _documented_precision() -> dict[str, int]:
    precision: dict[str, int] = {}
    for line in section("## Rounding").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("unit", "---"):
            continue
        units, given_as = cells
        if m := re.fullmatch(r"(\d+) decimals", given_as):
            places = int(m[1])
        elif given_as == "whole numbers":
            places = 0
        else:
            places = len(given_as.partition(".")[2])
        for unit in re.split(r", | \(and ", units):
            precision[unit.strip("`)")] = places
    return precision


def test_each_unit_is_rounded_to_the_precision_of_the_page() -> None:
    assert _documented_precision() == DECIMALS


def test_every_unit_of_the_catalogue_has_a_precision() -> None:
    assert {ind.unit for ind in CATALOGUE} <= DECIMALS.keys()


@pytest.mark.parametrize(
    ("value", "unit", "served"),
    [
        (0.123456, "ratio", 0.1235),
        (0.99996, "ratio", 1.0),
        (1.23456, "per space", 1.2346),
        (72.26, "%", 72.3),
        (182.456, "kW", 182.46),
        (-35.678, "kW", -35.68),
        (1234.5678, "kWh", 1234.57),
        (38.214, "kg", 38.21),
        (1.23456, "t CO2", 1.235),
        (0.0049, "s", 0.0),
        (12.3456, "s", 12.35),
        (2.7, "count", 3),
        (3.0, "count", 3),
    ],
)
def test_values_are_rounded_to_their_units_precision(
    value: float, unit: str, served: float
) -> None:
    assert rounded(value, unit) == served


@pytest.mark.parametrize("value", [0.0, 2.0, 7.4, 1e9, -3.2])
def test_counts_are_served_as_integers(value: float) -> None:
    served = rounded(value, "count")
    assert type(served) is int
    assert served == round(value)


@pytest.mark.parametrize("unit", sorted(set(DECIMALS) - {"count"}))
def test_measures_are_served_as_floats(unit: str) -> None:
    assert type(rounded(3, unit)) is float


@pytest.mark.parametrize("unit", sorted(DECIMALS))
@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
def test_no_value_nan_and_infinities_are_served_as_null(value: float | None, unit: str) -> None:
    assert rounded(value, unit) is None


@given(
    unit=st.sampled_from(sorted(set(DECIMALS) - {"count"})),
    tiny=st.floats(min_value=0, max_value=0.4),
)
def test_a_tiny_negative_value_is_never_served_as_negative_zero(unit: str, tiny: float) -> None:
    value = -tiny * 10 ** -DECIMALS[unit]
    served = rounded(value, unit)
    assert served == 0
    assert math.copysign(1.0, served) == 1.0


@given(
    unit=st.sampled_from(sorted(DECIMALS)),
    value=st.floats(min_value=-1e12, max_value=1e12),
)
def test_a_served_value_is_within_half_a_step_and_keeps_the_units_decimals(
    unit: str, value: float
) -> None:
    places = DECIMALS[unit]
    served = rounded(value, unit)
    assert served is not None
    assert abs(served - value) <= 0.5 * 10**-places * (1 + 1e-9) + abs(value) * 1e-15
    assert rounded(served, unit) == served
    assert served == round(value, places)


@pytest.mark.parametrize("ind", CATALOGUE, ids=[i.id for i in CATALOGUE])
def test_an_indicator_serves_its_value_at_its_units_precision(ind: Indicator) -> None:
    assert ind.served(1234.56789) == rounded(1234.56789, ind.unit)
    assert ind.served(None) is None


# Overriding thresholds


def test_without_a_thresholds_file_the_catalogue_is_the_default() -> None:
    catalogue = with_overrides(None)
    assert catalogue == BY_ID
    catalogue.pop("parking.occupancy_ratio")
    assert "parking.occupancy_ratio" in BY_ID


def test_the_pages_example_file_overrides_figure_and_entity_thresholds(tmp_path: Path) -> None:
    example = section("## Status").split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "thresholds.json"
    path.write_text(example, encoding="utf-8")
    catalogue = with_overrides(path)
    assert catalogue["parking.occupancy_ratio"].thresholds == Thresholds(
        "ge", attention=0.80, warning=0.92
    )
    assert catalogue["waste.huts_full"].entity_thresholds == Thresholds(
        "ge", attention=75, warning=88, critical=98
    )
    assert catalogue["energy.load_kw"].entity_thresholds == Thresholds(
        "ge", attention=0.85, warning=1.0
    )
    gas = catalogue["waste.gas_alarms"]
    assert (gas.param("h2s_ppm"), gas.param("h2s_ppm_critical")) == (8.0, 12.0)
    named = {"parking.occupancy_ratio", "waste.huts_full", "energy.load_kw", "waste.gas_alarms"}
    assert {k: v for k, v in catalogue.items() if k not in named} == {
        k: v for k, v in BY_ID.items() if k not in named
    }


def test_an_override_changes_the_status_a_value_gets(tmp_path: Path) -> None:
    path = write(tmp_path / "t.json", {"parking.occupancy_ratio": {"attention": 0.80}})
    default = BY_ID["parking.occupancy_ratio"].thresholds
    overridden = with_overrides(path)["parking.occupancy_ratio"].thresholds
    assert default is not None
    assert overridden is not None
    assert default.status(0.82) is Status.NORMAL
    assert overridden.status(0.80) is Status.ATTENTION
    assert overridden.status(0.7999) is Status.NORMAL


def test_a_partial_override_keeps_the_other_bounds_and_the_direction(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.json",
        {
            "parking.occupancy_ratio": {"attention": 0.80},
            "devices.online_ratio": {"critical": 0.5},
            "waste.huts_full": {"entity": {"critical": 95}},
        },
    )
    catalogue = with_overrides(path)
    assert catalogue["parking.occupancy_ratio"].thresholds == Thresholds(
        "ge", attention=0.80, warning=0.95
    )
    assert catalogue["devices.online_ratio"].thresholds == Thresholds(
        "lt", attention=0.95, warning=0.90, critical=0.5
    )
    assert catalogue["waste.huts_full"].entity_thresholds == Thresholds(
        "ge", attention=80, warning=90, critical=95
    )


def test_an_override_leaves_the_module_defaults_untouched(tmp_path: Path) -> None:
    before = dict(BY_ID)
    with_overrides(write(tmp_path / "t.json", {"devices.online_ratio": {"attention": 0.97}}))
    assert before == BY_ID
    assert BY_ID["devices.online_ratio"].thresholds == Thresholds(
        "lt", attention=0.95, warning=0.90, critical=0.70
    )


def test_a_parameter_override_is_merged_and_read_as_a_number(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.json",
        {"energy.voltage_deviation": {"params": {"nominal_v": 230}}},
    )
    volt = with_overrides(path)["energy.voltage_deviation"]
    assert volt.params == {"nominal_v": 230.0, "below_pct": 10.0, "above_pct": 7.0}
    assert type(volt.param("nominal_v")) is float


def test_parameters_and_thresholds_of_one_indicator_override_together(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.json",
        {"waste.gas_alarms": {"params": {"nh3_ppm": 20}}, "waste.fire_risk": {"entity": {}}},
    )
    catalogue = with_overrides(path)
    assert catalogue["waste.gas_alarms"].param("nh3_ppm") == 20
    assert catalogue["waste.fire_risk"] == BY_ID["waste.fire_risk"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bounds=st.lists(
        st.floats(min_value=0, max_value=1, allow_subnormal=False),
        min_size=3,
        max_size=3,
        unique=True,
    ).map(sorted),
    value=st.floats(min_value=-1, max_value=2),
)
def test_any_ordered_ladder_in_the_file_is_the_one_statuses_read(
    tmp_path: Path, bounds: list[float], value: float
) -> None:
    attention, warning, critical = bounds
    spec = {"attention": attention, "warning": warning, "critical": critical}
    path = write(tmp_path / "t.json", {"parking.occupancy_ratio": spec})
    th = with_overrides(path)["parking.occupancy_ratio"].thresholds
    assert th == Thresholds("ge", **spec)
    assert th.status(value) is expected_status(th, value)


@pytest.mark.parametrize(
    "unknown", ["parking.occupancy", "streetlight.on_ratio", "", "PARKING.FREE_SPACES"]
)
def test_a_thresholds_file_naming_an_unknown_indicator_is_an_error(
    tmp_path: Path, unknown: str
) -> None:
    path = write(tmp_path / "t.json", {"parking.free_spaces": {}, unknown: {"attention": 1}})
    with pytest.raises(ValueError, match=re.escape(f"unknown indicator {unknown!r}")):
        with_overrides(path)


def test_a_parameter_the_indicator_does_not_have_is_an_error_naming_those_it_has(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "t.json", {"devices.low_battery": {"params": {"waste_v": 3.0}}})
    with pytest.raises(ValueError, match=r"\['waste_v'\].*\['parking_v'\]"):
        with_overrides(path)


@pytest.mark.parametrize("value", ["high", "", "3,3"])
def test_a_parameter_that_is_not_a_number_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "t.json", {"devices.low_battery": {"params": {"parking_v": value}}})
    with pytest.raises(ValueError, match="parking_v: expected a number"):
        with_overrides(path)


def test_a_misspelt_bound_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "t.json", {"parking.occupancy_ratio": {"attentoin": 0.8}})
    with pytest.raises((TypeError, ValueError), match="attentoin"):
        with_overrides(path)


def test_a_thresholds_file_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{'parking.occupancy_ratio': {'attention': 0.8}}", encoding="utf-8")
    with pytest.raises(ValueError, match="double quotes"):
        with_overrides(path)


def test_a_missing_thresholds_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        with_overrides(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"parking.occupancy_ratio": {"attention": "high"}}, "attention: expected a number"),
        ({"parking.occupancy_ratio": {"attention": None}}, "attention: expected a number"),
        ({"parking.occupancy_ratio": {"attention": 0.99, "warning": 0.5}}, "must be above"),
        ({"devices.online_ratio": {"warning": 0.99}}, "must be below"),
        ({"parking.occupancy_ratio": 0.8}, "expected an object"),
        ({"waste.huts_full": {"entity": [80]}}, "expected an object of bounds"),
        ({"parking.occupancy_ratio": {"direction": "up"}}, "unknown keys"),
    ],
)
def test_a_thresholds_file_that_would_misjudge_is_refused_naming_the_key(
    tmp_path: Path, spec: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        with_overrides(write(tmp_path / "t.json", spec))


def test_a_thresholds_file_that_is_a_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        with_overrides(path)


# Districts


def test_the_city_has_its_16_districts_once_each() -> None:
    ids = [d.id for d in DISTRICTS]
    assert len(ids) == 16
    assert len(set(ids)) == 16
    assert all(re.fullmatch(r"[a-z]+", i) for i in ids)


def test_a_partial_site_load_override_keeps_the_other_default_bound(tmp_path: Path) -> None:
    path = write(tmp_path / "t.json", {"energy.load_kw": {"entity": {"warning": 1.2}}})
    load = with_overrides(path)["energy.load_kw"].entity_thresholds
    assert load == Thresholds("ge", attention=0.9, warning=1.2)
