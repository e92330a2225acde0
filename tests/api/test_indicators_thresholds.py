"""Every threshold of the catalogue is a deployment's to override, and the counts and the
statuses read the same thresholds: in the per-second city snapshot (sums in SQL) and in
a district's drill-down (entity by entity)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from cityvitals.api.main import create_app
from cityvitals.catalogue import BY_ID, with_overrides
from cityvitals.settings import ApiSettings
from tests.api.conftest import NOW, Api, Clock, device, energy, parking, pick, waste

S = timedelta(seconds=1)
OVERRIDES: dict[str, Any] = {
    # per hut: its fullest bin
    "waste.huts_full": {"entity": {"attention": 60, "warning": 70, "critical": 75}},
    "waste.fire_risk": {"entity": {"critical": 50}},
    "waste.gas_alarms": {"params": {"h2s_ppm": 5, "h2s_ppm_critical": 8}},
    # per lot: what the count counts
    "parking.lots_near_full": {"params": {"lot_occupancy": 0.5}},
    "parking.occupancy_ratio": {"attention": 0.5, "warning": 0.9},
    "energy.low_power_factor": {"entity": {"attention": 0.95}},
    "energy.voltage_deviation": {"params": {"nominal_v": 230}},
    "devices.low_battery": {"params": {"parking_v": 3.5}},
    "devices.online_ratio": {"attention": 0.5, "warning": 0.4, "critical": 0.3},
}


@pytest.fixture
def overridden(settings: ApiSettings, clock: Clock, tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(OVERRIDES), encoding="utf-8")
    app = create_app(
        settings.model_copy(update={"thresholds_file": str(path)}), clock=clock, background=False
    )
    with TestClient(app) as client:
        yield Api(client, app.state.engine, clock)


def _fleet(db: psycopg.Connection) -> None:
    """Entities each on the other side of an overridden threshold than of the default."""
    for i, occupied in enumerate((True, False)):
        device(db, f"p{i}", "parking", district="qingpu", site="Lot")
        parking(db, f"p{i}", NOW - 10 * S, occupied=occupied, battery_v=3.4)
    device(db, "p9", "parking", district="qingpu")  # never heard from: 8 of 9 online
    for hut in ("w1", "w2", "w3", "w4"):
        device(db, hut, "waste", district="qingpu", site=hut)
    waste(db, "w1", NOW - 10 * S, [72.0, 10.0])  # full from 60, warning from 70
    waste(db, "w2", NOW - 10 * S, [10.0], temp_c=55)  # fire from 50
    waste(db, "w3", NOW - 10 * S, [10.0], h2s=6.0)  # gas warning from 5
    waste(db, "w4", NOW - 10 * S, [10.0], h2s=9.0)  # gas critical from 8
    device(db, "m1", "energy", district="qingpu", site="Tower")
    device(db, "m2", "energy", district="qingpu", site="Mall")
    energy(db, "m1", NOW - 10 * S, kw=10, voltage=225, pf=0.93)  # low from 0.95
    energy(db, "m2", NOW - 10 * S, kw=10, voltage=240, pf=0.99)  # in 230 V -10 %/+7 %


def _counts(doc: dict[str, Any], scope: str) -> dict[str, tuple[Any, str]]:
    ids = (
        "waste.huts_full",
        "waste.fire_risk",
        "waste.gas_alarms",
        "parking.lots_near_full",
        "parking.occupancy_ratio",
        "energy.low_power_factor",
        "energy.voltage_deviation",
        "devices.low_battery",
        "devices.online_ratio",
    )
    return {i: (pick(doc, scope, i)["value"], pick(doc, scope, i)["status"]) for i in ids}


DEFAULTS = {
    "waste.huts_full": (0, "normal"),
    "waste.fire_risk": (0, "normal"),
    "waste.gas_alarms": (0, "normal"),
    "parking.lots_near_full": (0, "normal"),
    "parking.occupancy_ratio": (0.5, "normal"),
    "energy.low_power_factor": (0, "normal"),
    "energy.voltage_deviation": (1, "warning"),
    "devices.low_battery": (0, "normal"),
    "devices.online_ratio": (0.8889, "warning"),
}
OVERRIDDEN = {
    "waste.huts_full": (1, "warning"),
    "waste.fire_risk": (1, "critical"),
    "waste.gas_alarms": (2, "critical"),
    "parking.lots_near_full": (1, "normal"),
    "parking.occupancy_ratio": (0.5, "attention"),
    "energy.low_power_factor": (1, "attention"),
    "energy.voltage_deviation": (0, "normal"),
    "devices.low_battery": (2, "normal"),
    "devices.online_ratio": (0.8889, "normal"),
}


def test_defaults_give_the_catalogues_counts(api: Api, db: psycopg.Connection) -> None:
    _fleet(db)
    doc = api.vitals()
    for scope in ("city", "qingpu"):
        assert _counts(doc, scope) == DEFAULTS


def test_overridden_thresholds_change_counts_and_statuses_alike(
    overridden: Api, db: psycopg.Connection
) -> None:
    _fleet(db)
    doc = overridden.vitals()
    for scope in ("city", "qingpu"):
        assert _counts(doc, scope) == OVERRIDDEN
    assert doc["status"] == "critical"
    detail = overridden.client.get("/v1/vitals/districts/qingpu").json()
    assert _counts({"districts": [detail]}, "qingpu") == OVERRIDDEN
    sites = {s["id"]: s for s in detail["sites"]}
    assert sites["w1"]["status"] == "warning"
    assert sites["w2"]["status"] == "critical"
    assert sites["w3"]["status"] == "warning"
    assert sites["w4"]["status"] == "critical"
    assert sites["Lot"]["status"] == "attention"  # occupancy 0.5 >= the overridden 0.5
    assert sites["Tower"]["status"] == "attention"  # power factor 0.93 < 0.95
    assert sites["Mall"]["status"] == "normal"  # 240 V is within 230 V -10 %/+7 %
    alerts = overridden.client.get("/v1/alerts").json()["items"]
    opened = {(a["indicator"], a["entity"]): (a["severity"], a["threshold"]) for a in alerts}
    assert opened[("waste.huts_full", "w1")] == ("warning", 70)
    assert opened[("waste.fire_risk", "w2")] == ("critical", 50)
    assert opened[("waste.gas_alarms", "w3")] == ("warning", 5)
    assert opened[("waste.gas_alarms", "w4")] == ("critical", 8)
    assert ("energy.voltage_deviation", "m2") not in opened


def test_an_override_naming_an_unknown_parameter_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"waste.gas_alarms": {"params": {"co_ppm": 5}}}), "utf-8")
    with pytest.raises(ValueError, match="co_ppm"):
        with_overrides(path)
    path.write_text(json.dumps({"waste.gas_alarms": {"params": {"h2s_ppm": 12}}}), "utf-8")
    gas = with_overrides(path)["waste.gas_alarms"]
    assert gas.param("h2s_ppm") == 12
    assert gas.param("nh3_ppm") == BY_ID["waste.gas_alarms"].param("nh3_ppm")
