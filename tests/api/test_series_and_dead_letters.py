"""Series from samples, dead letters listed and replayed through the store."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from cityvitals.api.main import create_app
from cityvitals.settings import ApiSettings
from tests.api.conftest import AUTH, NOW, Api, device, parking
from tests.fix_services import CITYVITALS
from tests.store.refusal import REFUSED_KW, install_refusal


def test_refresh_writes_one_sample_per_minute_and_series_buckets_them(
    api: Api, db: psycopg.Connection
) -> None:
    device(db, "e1", "energy", district="xuhui")
    for minute, kw in [(0, 100.0), (1, 300.0), (5, 50.0)]:
        api.clock.now = NOW + timedelta(minutes=minute)
        db.execute(
            "INSERT INTO device_state (device_id, kind, last_seen_at) VALUES ('e1', 'energy', %s) "
            "ON CONFLICT (device_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            (api.clock.now,),
        )
        db.execute(
            "INSERT INTO latest_energy (device_id, ts, received_at, active_power_kw) "
            "VALUES ('e1', %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
            "ts = excluded.ts, active_power_kw = excluded.active_power_kw",
            (api.clock.now, api.clock.now, kw),
        )
        api.refresh()
        api.refresh()  # same minute: no second sample
    r = api.client.get(
        "/v1/series",
        params={
            "indicator": "energy.load_kw",
            "district": "xuhui",
            "step": "5m",
            "from": NOW.isoformat(),
            "to": (NOW + timedelta(minutes=10)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"] == "kW"
    assert body["step_s"] == 300
    assert body["source"] == "samples"
    assert [(p["value"], p["min"], p["max"]) for p in body["points"]] == [
        (200.0, 100.0, 300.0),
        (50.0, 50.0, 50.0),
    ]
    # Peak load since local midnight comes from those samples.
    peak = api.figure("xuhui", "energy.peak_load_kw_today")
    assert peak["value"] == 300


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"indicator": "nope"}, "indicator"),
        ({"indicator": "energy.load_kw", "district": "atlantis"}, "district"),
        ({"indicator": "devices.unassigned", "district": "xuhui"}, "district"),
        ({"indicator": "energy.load_kw", "step": "1x"}, "step"),
        ({"indicator": "energy.load_kw", "step": "0"}, "step"),
        (
            {
                "indicator": "energy.load_kw",
                "from": "2026-11-25T00:00:00Z",
                "to": "2026-11-24T00:00:00Z",
            },
            "from",
        ),
        ({"indicator": "energy.load_kw", "from": "yesterday"}, "from"),
        ({}, "indicator"),
    ],
)
def test_series_rejects_bad_parameters_naming_them(
    api: Api, params: dict[str, str], name: str
) -> None:
    r = api.client.get("/v1/series", params=params)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == name


def _dead_letter(
    db: psycopg.Connection, topic: str, payload: bytes, reason: str, received_at: datetime
) -> None:
    db.execute(
        "INSERT INTO dead_letters (topic, payload, reason, detail, received_at, collector) "
        "VALUES (%s, %s, %s, 'x', %s, 'c1')",
        (topic, payload, reason, received_at),
    )


def test_dead_letters_list_text_or_base64_and_replay(api: Api, db: psycopg.Connection) -> None:
    received = datetime.now(UTC) - timedelta(minutes=5)
    ok = b'{"occupied": true, "ts": %d}' % int((received.timestamp() - 1) * 1000)
    _dead_letter(db, "city/parking/p1/telemetry", ok, "schema", received)
    _dead_letter(db, "city/parking/p2/telemetry", b'{"occupied": 3}', "schema", received)
    _dead_letter(db, "city/parking/p3/telemetry", b"\xff\xfe", "invalid_json", received)
    items = api.client.get("/v1/dead-letters").json()["items"]
    assert len(items) == 3
    binary = next(i for i in items if i["reason"] == "invalid_json")
    assert (binary["payload"], binary["payload_encoding"]) == ("//4=", "base64")
    text = api.client.get("/v1/dead-letters", params={"reason": "schema", "limit": 1}).json()
    assert len(text["items"]) == 1
    assert text["items"][0]["payload_encoding"] == "utf-8"
    assert api.client.get("/v1/dead-letters", params={"reason": "nope"}).status_code == 422
    since = (received + timedelta(seconds=1)).isoformat()
    assert api.client.get("/v1/dead-letters", params={"since": since}).json()["items"] == []

    r = api.client.post("/v1/dead-letters/replay", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "replayed": 3,
        "stored": 1,
        "duplicate": 0,
        "rejected": {"schema": 1, "invalid_json": 1},
    }
    row = db.execute(
        "SELECT received_at, ts_from_broker FROM readings_parking WHERE device_id = 'p1'"
    ).fetchone()
    assert row is not None
    assert row[0] == received
    # Stored ones are not replayed again; the rest are kept and re-tried.
    r = api.client.post("/v1/dead-letters/replay", headers=AUTH)
    assert r.json()["replayed"] == 2
    results = {
        i["topic"]: i["replay_result"] for i in api.client.get("/v1/dead-letters").json()["items"]
    }
    assert results["city/parking/p1/telemetry"] == "stored"
    assert results["city/parking/p2/telemetry"] == "schema"


def test_replay_marks_an_already_stored_reading_duplicate(api: Api, db: psycopg.Connection) -> None:
    received = datetime.now(UTC) - timedelta(minutes=5)
    ts = received - timedelta(seconds=1)
    device(db, "p1", "parking")
    parking(db, "p1", ts, occupied=True)
    db.execute(
        "INSERT INTO readings_parking (device_id, ts, received_at, occupied) "
        "VALUES ('p1', %s, %s, true)",
        (ts, received),
    )
    body = b'{"occupied": true, "ts": "%s"}' % ts.isoformat().encode()
    _dead_letter(db, "city/parking/p1/telemetry", body, "schema", received)
    r = api.client.post("/v1/dead-letters/replay", headers=AUTH, params={"reason": "schema"})
    assert r.json()["duplicate"] == 1


def test_an_unstorable_reading_stays_a_dead_letter_until_the_database_takes_it(
    api: Api, db: psycopg.Connection, database_url: str
) -> None:
    install_refusal(database_url)
    received = datetime.now(UTC) - timedelta(minutes=1)
    body = json.dumps({"active_power_kw": REFUSED_KW}).encode()
    _dead_letter(db, "city/energy/em-r/telemetry", body, "unstorable", received)

    def replay() -> dict[str, object]:
        r = api.client.post(
            "/v1/dead-letters/replay", headers=AUTH, params={"reason": "unstorable"}
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    still = replay()
    assert (still["stored"], still["rejected"]) == (0, {"unstorable": 1})
    # The fix: the database takes the value now; the same dead letter is stored, once.
    db.execute("DROP TRIGGER refuse_power ON readings_energy")
    assert replay()["stored"] == 1
    assert replay()["replayed"] == 0  # stored dead letters are not replayed again
    readings = db.execute("SELECT count(*) FROM readings_energy").fetchone()
    letters = db.execute("SELECT count(*), min(replay_result) FROM dead_letters").fetchone()
    assert readings == (1,)
    assert letters == (1, "stored")


def test_series_reads_the_thresholds_file_once_at_start(
    settings: ApiSettings, tmp_path: Path
) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"energy.load_kw": {"warning": 5000.0}}))
    app = create_app(settings.model_copy(update={"thresholds_file": str(path)}), background=False)
    with TestClient(app) as client:
        path.unlink()  # a request that re-read it would fail now
        r = client.get("/v1/series", params={"indicator": "energy.load_kw"})
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "kW"


def test_replay_from_the_command_line_prints_its_report(
    db: psycopg.Connection, database_url: str, tmp_path: Path
) -> None:
    received = datetime.now(UTC) - timedelta(minutes=5)
    ok = b'{"occupied": false, "ts": %d}' % int((received.timestamp() - 1) * 1000)
    _dead_letter(db, "city/parking/p7/telemetry", ok, "schema", received)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")}
    env["CITYVITALS_DATABASE_URL"] = database_url
    run = functools.partial(
        subprocess.run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    done = run([CITYVITALS, "dead-letters", "replay", "--reason", "schema"], check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"replayed": 1, "stored": 1, "duplicate": 0, "rejected": {}}
    done = run([CITYVITALS, "dead-letters", "replay", "--reason", "nope"], check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("cityvitals dead-letters replay: error: unknown reason 'nope'")
