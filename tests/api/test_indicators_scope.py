"""Which devices a figure counts: the city counts every device, also those without a
district, and its status is the worst of its districts' and of its own figures'; a
device is online by the `ts` of its newest message, not by when it arrived."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg

from cityvitals.payloads import Limits
from cityvitals.store import BatchWriter, Incoming
from tests.api.conftest import NOW, Api, device, parking, pick, seen, waste

S = timedelta(seconds=1)


def test_a_hut_without_a_district_on_fire_makes_the_city_critical(
    api: Api, db: psycopg.Connection
) -> None:
    device(db, "w-in", "waste", district="minhang")
    waste(db, "w-in", NOW - 10 * S, [20.0], temp_c=20)
    # Auto-registered from the wire: no district.
    device(db, "w-auto", "waste", auto=True)
    waste(db, "w-auto", NOW - 10 * S, [30.0], temp_c=70)
    # Registered in a district that is not one of the 16.
    device(db, "w-far", "waste", district="atlantis")
    waste(db, "w-far", NOW - 10 * S, [40.0], h2s=16.0)
    doc = api.vitals()
    assert {d["status"] for d in doc["districts"]} == {"normal"}
    fire = pick(doc, "city", "waste.fire_risk")
    assert (fire["value"], fire["status"]) == (1, "critical")
    gas = pick(doc, "city", "waste.gas_alarms")
    assert (gas["value"], gas["status"]) == (1, "critical")
    assert pick(doc, "minhang", "waste.fire_risk")["value"] == 0
    assert doc["status"] == "critical"
    # Every registered hut counts for the city, whatever its district.
    assert pick(doc, "city", "waste.fill_pct_mean")["value"] == 30.0
    assert pick(doc, "city", "waste.fill_pct_mean")["coverage"] == 1
    online = pick(doc, "city", "devices.online_ratio")
    assert (online["value"], online["by"]["waste"]) == (1, 1)
    assert pick(doc, "city", "devices.unassigned")["value"] == 1


def test_city_status_takes_its_own_figures(api: Api, db: psycopg.Connection) -> None:
    device(db, "p1", "parking", district="yangpu")
    parking(db, "p1", NOW - 5 * S, occupied=False)
    minute = NOW.replace(second=0)
    db.execute(
        "INSERT INTO ingest_minutely (minute, collector, received, stored, duplicates, "
        "rejected, lag_counts) VALUES (%s, 'c1', 100, 90, 0, 10, %s)",
        (minute, [90] + [0] * 11),
    )
    doc = api.vitals()
    assert {d["status"] for d in doc["districts"]} == {"normal"}
    rejected = pick(doc, "city", "devices.rejected_ratio_10m")
    assert (rejected["value"], rejected["status"]) == (0.1, "warning")
    assert doc["status"] == "warning"


def test_a_backlog_delivered_now_does_not_make_a_device_online(
    api: Api, db: psycopg.Connection
) -> None:
    device(db, "p1", "parking", district="putuo")
    device(db, "p2", "parking", district="putuo")
    parking(db, "p2", NOW - 60 * S, occupied=False)
    # A reading taken an hour ago, published now: the write path records its `ts` as
    # the device's newest message (receive time only where `ts` was absent).
    old = NOW - timedelta(hours=1)
    seen(db, "p1", "parking", old)
    db.execute(
        "INSERT INTO latest_parking (device_id, ts, received_at, occupied, battery_v) "
        "VALUES ('p1', %s, %s, true, 3.0)",
        (old, NOW),
    )
    doc = api.vitals()
    occ = pick(doc, "putuo", "parking.occupancy_ratio")
    assert (occ["value"], occ["coverage"]) == (0, 0.5)  # p2 only: free
    assert occ["data_age_s"] == 60  # now - the newest `ts` used, not the receive time
    assert pick(doc, "putuo", "devices.low_battery")["value"] == 0
    online = pick(doc, "putuo", "devices.online_ratio")
    assert online["value"] == 0.5
    assert pick(doc, "city", "parking.free_spaces")["value"] == 1


def test_a_late_reading_never_changes_the_latest_state(api: Api, database_url: str) -> None:
    """The API reads the latest state the write path keeps, which a late reading (older
    than the device's newest) never overwrites; written through the real write path."""
    writer = BatchWriter(prefix="city", limits=Limits(), local_tz="Asia/Shanghai", collector="t")

    def reading(age_s: int, fill: float, temp_c: float) -> Incoming:
        body = {
            "ts": (NOW - age_s * S).isoformat(),
            "bins": [{"category": "wet", "fill_pct": fill}],
            "temp_c": temp_c,
        }
        return Incoming("city/waste/w1/telemetry", json.dumps(body).encode(), NOW)

    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, district) VALUES ('w1', 'waste', 'songjiang')"
        )
        conn.commit()
        for msg in (reading(60, 40.0, 20.0), reading(120, 95.0, 80.0)):  # the second is late
            result = writer.write(conn, [msg])
            assert not result.rejected, result.rejected
    doc = api.vitals()
    fill = pick(doc, "songjiang", "waste.fill_pct_mean")
    assert (fill["value"], fill["data_age_s"]) == (40.0, 60)
    assert pick(doc, "songjiang", "waste.fire_risk")["value"] == 0
    assert pick(doc, "songjiang", "waste.huts_full")["value"] == 0


def test_a_reading_an_hour_old_published_now_is_not_counted(api: Api, database_url: str) -> None:
    """The same through the real write path: liveness and age count from the reading's
    `ts`, not from when it arrived."""
    writer = BatchWriter(prefix="city", limits=Limits(), local_tz="Asia/Shanghai", collector="t")

    def reading(dev: str, age: timedelta, occupied: bool) -> Incoming:
        body = {"ts": (NOW - age).isoformat(), "occupied": occupied, "battery_v": 3.0}
        return Incoming(f"city/parking/{dev}/telemetry", json.dumps(body).encode(), NOW)

    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, district) "
            "VALUES ('p1', 'parking', 'hongkou'), ('p2', 'parking', 'hongkou')"
        )
        conn.commit()
        result = writer.write(
            conn, [reading("p1", timedelta(hours=1), True), reading("p2", 30 * S, False)]
        )
        assert not result.rejected, result.rejected
    doc = api.vitals()
    occ = pick(doc, "hongkou", "parking.occupancy_ratio")
    assert (occ["value"], occ["coverage"], occ["data_age_s"]) == (0, 0.5, 30)
    assert pick(doc, "hongkou", "devices.online_ratio")["value"] == 0.5
    assert pick(doc, "hongkou", "devices.low_battery")["value"] == 1  # p2 only
    assert pick(doc, "city", "parking.free_spaces")["value"] == 1
