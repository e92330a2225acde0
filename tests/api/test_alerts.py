"""Alerts open, escalate and clear with hysteresis, and keep their history."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.api.conftest import NOW, Api, device, waste

S = timedelta(seconds=1)


def _alerts(api: Api, **params: str) -> list[dict[str, object]]:
    r = api.client.get("/v1/alerts", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


# Five minutes apart every refresh evaluates every check; seconds apart, within one
# minute, the engine evaluates only the checks that changed (`AlertBook.evaluate`'s
# `partial`): the alerts must come out the same.
@pytest.mark.parametrize("step", [300, 2], ids=["minutes apart", "seconds apart"])
def test_hut_alert_opens_escalates_and_clears_with_hysteresis(
    api: Api, db: psycopg.Connection, step: int
) -> None:
    device(db, "w1", "waste", district="minhang")
    waste(db, "w1", NOW, [82])
    api.refresh()
    [alert] = (
        _alerts(api, indicator="x")
        if False
        else [a for a in _alerts(api) if a["indicator"] == "waste.huts_full"]
    )
    assert (alert["entity"], alert["district"], alert["severity"]) == ("w1", "minhang", "attention")
    assert alert["value"] == 82

    api.clock.advance(seconds=step)
    waste(db, "w1", api.clock.now, [95])
    api.refresh()
    [alert] = [a for a in _alerts(api) if a["indicator"] == "waste.huts_full"]
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("warning", 95, 90)

    # 79 is below the 80 threshold but within the 5 % margin (76): still active.
    api.clock.advance(seconds=step)
    waste(db, "w1", api.clock.now, [79])
    api.refresh()
    api.refresh()  # re-reading the same reading does not count as a second one
    assert [a["severity"] for a in _alerts(api) if a["indicator"] == "waste.huts_full"] == [
        "warning"
    ]
    metrics = api.client.get("/metrics").text
    assert (
        'cityvitals_alert_active{district="minhang",entity="w1",indicator="waste.huts_full",'
        'severity="warning"} 1.0' in metrics
    )
    # A second normal reading clears it.
    api.clock.advance(seconds=step)
    waste(db, "w1", api.clock.now, [78])
    api.refresh()
    assert [a for a in _alerts(api) if a["indicator"] == "waste.huts_full"] == []
    [cleared] = [a for a in _alerts(api, state="cleared") if a["indicator"] == "waste.huts_full"]
    assert cleared["cleared_at"] is not None
    assert cleared["severity"] == "warning"


@pytest.mark.parametrize("step", [300, 2], ids=["minutes apart", "seconds apart"])
def test_alert_clears_at_once_past_the_margin_and_reopens(
    api: Api, db: psycopg.Connection, step: int
) -> None:
    device(db, "w2", "waste", district="baoshan")
    waste(db, "w2", NOW, [20], temp_c=70)
    api.refresh()
    [fire] = _alerts(api, severity="critical", district="baoshan")
    assert fire["indicator"] == "waste.fire_risk"
    api.clock.advance(seconds=step)
    waste(db, "w2", api.clock.now, [20], temp_c=50)  # below 60 - 5 % = 57
    api.refresh()
    assert _alerts(api, district="baoshan") == []
    api.clock.advance(seconds=step)
    waste(db, "w2", api.clock.now, [20], temp_c=61)
    api.refresh()
    assert len(_alerts(api, district="baoshan")) == 1
    assert len(_alerts(api, state="all", district="baoshan")) == 2
    assert 'cityvitals_alerts_active{severity="critical"} 1.0' in api.client.get("/metrics").text


def test_alert_filters_are_validated(api: Api) -> None:
    for params in ({"state": "open"}, {"district": "atlantis"}, {"severity": "high"}):
        r = api.client.get("/v1/alerts", params=params)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"][-1] == next(iter(params))
