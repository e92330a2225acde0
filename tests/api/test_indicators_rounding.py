"""Served values are rounded to a precision that fits their unit, at every level."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from cityvitals.catalogue import CATALOGUE, DECIMALS, rounded
from tests.api.conftest import NOW, Api, device, energy, parking, pick, waste

S = timedelta(seconds=1)


def test_every_unit_of_the_catalogue_has_a_precision() -> None:
    assert {i.unit for i in CATALOGUE} <= DECIMALS.keys()


@pytest.mark.parametrize(
    ("unit", "value", "served"),
    [
        ("ratio", 2 / 3, 0.6667),
        ("per space", 1 / 7, 0.1429),
        ("count", 3.0, 3),
        ("count", 2.9999999, 3),
        ("%", 25.5567, 25.6),
        ("kW", 10.456, 10.46),
        ("kWh", 12.3456, 12.35),
        ("kg", 1.236, 1.24),
        ("t CO2", 0.0051853, 0.005),
        ("s", 10.123456, 10.12),
        ("kW", -0.001, 0.0),
        ("ratio", float("nan"), None),
        ("kW", float("inf"), None),
        ("kW", None, None),
    ],
)
def test_rounded_to_the_units_precision(unit: str, value: float | None, served: object) -> None:
    got = rounded(value, unit)
    assert got == served
    assert type(got) is type(served)
    if isinstance(got, float):
        assert str(got) != "-0.0"


def _indicators(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc.get("indicators", [])
    for d in doc.get("districts", []):
        yield from d["indicators"]
    for s in doc.get("sites", []):
        yield from s["indicators"]


def _assert_rounded(ind: dict[str, Any]) -> None:
    places = DECIMALS[ind["unit"]]
    numbers = [ind["value"], *(ind.get("by") or {}).values()]
    for v in numbers:
        if v is None:
            continue
        if places == 0:
            assert isinstance(v, int), ind
        else:
            assert round(v, places) == v, ind
    for field, p in (("coverage", DECIMALS["ratio"]), ("data_age_s", DECIMALS["s"])):
        if ind[field] is not None:
            assert round(ind[field], p) == ind[field], (field, ind)


def test_city_district_and_site_values_are_rounded(api: Api, db: psycopg.Connection) -> None:
    ts = NOW - timedelta(seconds=10.123456)
    for i in range(3):
        device(db, f"p{i}", "parking", district="xuhui", site="Lot")
        parking(db, f"p{i}", ts, occupied=i == 0)
    for h in ("w1", "w2", "w3"):
        device(db, h, "waste", district="xuhui", site=h)
    waste(db, "w1", ts, [33.33, 33.34, 10.0])
    waste(db, "w2", ts, [50.0])
    for cat, kg in (("wet", 1.236), ("dry", 2.0001)):
        db.execute(
            "INSERT INTO waste_daily (device_id, day, category, deposited_kg) "
            "VALUES ('w1', '2026-11-24', %s, %s)",
            (cat, kg),
        )
    device(db, "m1", "energy", district="xuhui", site="Tower")
    energy(db, "m1", ts, kw=10.456, adjustable=1.111)
    db.execute(
        "INSERT INTO energy_daily (device_id, day, consumption_kwh, last_ts) "
        "VALUES ('m1', '2026-11-24', 12.3456, %s)",
        (NOW,),
    )
    doc = api.vitals()
    for scope in ("city", "xuhui"):
        occ = pick(doc, scope, "parking.occupancy_ratio")
        assert occ["value"] == 0.3333
        assert occ["data_age_s"] == 10.12
        free = pick(doc, scope, "parking.free_spaces")["value"]
        assert (free, type(free)) == (2, int)
        # bins 33.33, 33.34, 10.0 and 50.0: 31.6675
        assert pick(doc, scope, "waste.fill_pct_mean")["value"] == 31.7
        assert pick(doc, scope, "waste.fill_pct_mean")["coverage"] == 0.6667
        dep = pick(doc, scope, "waste.deposited_kg_today")
        assert dep["value"] == 3.24
        assert dep["by"] == {"wet": 1.24, "dry": 2.0, "recyclable": 0.0, "hazardous": 0.0}
        assert pick(doc, scope, "energy.load_kw")["value"] == 10.46
        assert pick(doc, scope, "energy.adjustable_kw")["value"] == 1.11
        assert pick(doc, scope, "energy.consumption_kwh_today")["value"] == 12.35
        # 12.3456 kWh x 0.42 kg/kWh = 5.185 kg
        assert pick(doc, scope, "energy.co2_t_today")["value"] == 0.005
        online = pick(doc, scope, "devices.online_ratio")
        assert online["value"] == 0.8571  # 6 of 7
        assert online["by"] == {"parking": 1.0, "waste": 0.6667, "energy": 1.0}
    for ind in _indicators(doc):
        _assert_rounded(ind)

    detail = api.client.get("/v1/vitals/districts/xuhui").json()
    lot = next(s for s in detail["sites"] if s["id"] == "Lot")
    occ = next(i for i in lot["indicators"] if i["id"] == "parking.occupancy_ratio")
    assert (occ["value"], occ["data_age_s"]) == (0.3333, 10.12)
    hut = next(s for s in detail["sites"] if s["id"] == "w1")
    fill = next(i for i in hut["indicators"] if i["id"] == "waste.fill_pct_mean")
    assert fill["value"] == 25.6  # 25.5567
    tower = next(s for s in detail["sites"] if s["id"] == "Tower")
    used = next(i for i in tower["indicators"] if i["id"] == "energy.consumption_kwh_today")
    assert used["value"] == 12.35
    for ind in _indicators(detail):
        _assert_rounded(ind)
