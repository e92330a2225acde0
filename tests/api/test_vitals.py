"""Every indicator against hand-computed figures, with a fixed clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cityvitals.catalogue import CATALOGUE, DISTRICTS
from cityvitals.payloads import Limits
from cityvitals.store import BatchWriter, Incoming
from tests.api.conftest import NOW, Api, device, energy, parking, pick, seen, waste

S = timedelta(seconds=1)
HOUR = NOW.replace(minute=0, second=0, microsecond=0)


def test_every_indicator_is_served_for_every_level_with_null_values_and_no_data(api: Api) -> None:
    doc = api.vitals()
    city_ids = [i["id"] for i in doc["indicators"]]
    assert city_ids == [i.id for i in CATALOGUE if "city" in i.levels]
    assert [d["id"] for d in doc["districts"]] == [d.id for d in DISTRICTS]
    for d in doc["districts"]:
        assert [i["id"] for i in d["indicators"]] == [
            i.id for i in CATALOGUE if "district" in i.levels
        ]
        assert d["name"]["zh"]
        assert d["name"]["en"]
    for ind in doc["indicators"]:
        assert set(ind) >= {"id", "name", "value", "unit", "status", "coverage", "data_age_s"}
        if ind["id"] != "devices.unassigned":
            assert ind["value"] is None, ind
        assert ind["stale"] is True
    assert pick(doc, "city", "devices.unassigned")["value"] == 0
    assert doc["status"] == "normal"


def test_parking_counts_online_sensors_only(api: Api, db: psycopg.Connection) -> None:
    for i in range(1, 9):
        device(db, f"p{i}", "parking", district="xuhui", site="lotA" if i <= 4 else "lotB")
    parking(db, "p1", NOW - 10 * S, occupied=True)
    parking(db, "p2", NOW - 20 * S, occupied=True)
    parking(db, "p3", NOW - 30 * S, occupied=False, battery_v=3.1)
    # Heartbeat every 600 s: silent for more than 1800 s is offline.
    parking(db, "p4", NOW - 1801 * S, occupied=True)
    parking(db, "p5", NOW - 40 * S, occupied=True)
    parking(db, "p6", NOW - 50 * S, occupied=True)
    # Its last will said offline after its last reading: offline.
    parking(db, "p7", NOW - 60 * S, occupied=True)
    seen(db, "p7", "parking", NOW - 60 * S, status_online=False, status_at=NOW - 60 * S)
    # Offline by last will, then a later message: revived.
    parking(db, "p8", NOW - 50 * S, occupied=True)
    seen(db, "p8", "parking", NOW - 50 * S, status_online=False, status_at=NOW - 100 * S)
    for dev, hour, n in [
        ("p1", HOUR - timedelta(hours=1), 2),
        ("p2", HOUR - timedelta(hours=25), 1),  # older than 24 h
        ("p4", HOUR, 3),  # offline sensor
        ("p5", HOUR, 1),
    ]:
        db.execute(
            "INSERT INTO parking_hourly (device_id, hour, transitions) VALUES (%s, %s, %s)",
            (dev, hour, n),
        )
    doc = api.vitals()
    occ = pick(doc, "xuhui", "parking.occupancy_ratio")
    # online and reporting: p1 p2 p3 p5 p6 p8 (6 of 8), occupied: p1 p2 p5 p6 p8
    assert occ["value"] == 0.8333  # 5 / 6, rounded to a ratio's 4 decimals
    assert occ["status"] == "normal"
    assert occ["coverage"] == pytest.approx(6 / 8)
    assert occ["stale"] is True  # coverage 0.75 < 0.8
    assert occ["data_age_s"] == pytest.approx(10)
    assert pick(doc, "xuhui", "parking.free_spaces")["value"] == 1
    # lotA 2/3 occupied; lotB p5 p6 p8 3/3 (p7 offline)
    assert pick(doc, "xuhui", "parking.lots_near_full")["value"] == 1
    assert pick(doc, "xuhui", "parking.turnover_24h")["value"] == pytest.approx(3 / 6)
    assert pick(doc, "xuhui", "devices.low_battery")["value"] == 1
    ratio = pick(doc, "xuhui", "devices.online_ratio")
    assert ratio["value"] == pytest.approx(6 / 8)
    assert ratio["by"] == {"parking": pytest.approx(0.75), "waste": None, "energy": None}
    assert ratio["status"] == "warning"  # below 0.9, not below 0.7


def test_parking_lot_sites_and_occupancy_threshold(api: Api, db: psycopg.Connection) -> None:
    for i in range(20):
        device(db, f"q{i}", "parking", district="jingan", site="Plaza")
        parking(db, f"q{i}", NOW - 5 * S, occupied=i < 18)  # 18/20 = 0.9
    doc = api.client.get("/v1/vitals/districts/jingan")
    api.refresh()
    doc = api.client.get("/v1/vitals/districts/jingan").json()
    lot = next(s for s in doc["sites"] if s["id"] == "Plaza")
    assert lot["kind"] == "parking_lot"
    occ = next(i for i in lot["indicators"] if i["id"] == "parking.occupancy_ratio")
    assert occ["value"] == pytest.approx(0.9)
    assert occ["status"] == "attention"  # >= 0.85
    assert doc["status"] == "attention"
    assert api.client.get("/v1/vitals/districts/atlantis").status_code == 404


def test_waste_huts_counts_and_worst_entity_status(api: Api, db: psycopg.Connection) -> None:
    for h in ("w1", "w2", "w3"):
        device(db, h, "waste", district="pudong", site="Compound 1")
    waste(db, "w1", NOW - 60 * S, [50, 90], h2s=12.0, temp_c=30)
    waste(db, "w2", NOW - 120 * S, [20, 30, 40], temp_c=65, seepage=True)
    # 5-minute reports: silent for more than 900 s is offline, and excluded.
    waste(db, "w3", NOW - 901 * S, [100], nh3=50.0, temp_c=90)
    midnight = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 00:00 in Shanghai
    for dev, eid, ts in [
        ("w1", "e1", midnight + 30 * S),
        ("w1", "e2", NOW - 5 * S),
        ("w1", "e0", midnight - S),  # yesterday, local time
        ("w3", "e3", NOW - 5 * S),  # offline hut
    ]:
        db.execute(
            "INSERT INTO events (device_id, event_id, kind, type, ts, received_at) "
            "VALUES (%s, %s, 'waste', 'off_hours_dropoff', %s, %s)",
            (dev, eid, ts, ts),
        )
    for dev, day, cat, kg in [
        ("w1", "2026-11-24", "wet", 10.5),
        ("w1", "2026-11-24", "dry", 2.0),
        ("w2", "2026-11-24", "recyclable", 1.25),
        ("w2", "2026-11-23", "wet", 100.0),  # yesterday
    ]:
        db.execute(
            "INSERT INTO waste_daily (device_id, day, category, deposited_kg) "
            "VALUES (%s, %s, %s, %s)",
            (dev, day, cat, kg),
        )
    doc = api.vitals()
    assert pick(doc, "pudong", "waste.fill_pct_mean")["value"] == pytest.approx(46.0)
    full = pick(doc, "pudong", "waste.huts_full")
    assert (full["value"], full["status"]) == (1, "warning")  # w1 max 90 -> warning
    gas = pick(doc, "pudong", "waste.gas_alarms")
    assert (gas["value"], gas["status"]) == (1, "warning")
    fire = pick(doc, "pudong", "waste.fire_risk")
    assert (fire["value"], fire["status"]) == (1, "critical")
    seep = pick(doc, "pudong", "waste.seepage")
    assert (seep["value"], seep["status"]) == (1, "attention")
    assert pick(doc, "pudong", "waste.offhours_dropoffs_today")["value"] == 2
    dep = pick(doc, "pudong", "waste.deposited_kg_today")
    assert dep["value"] == pytest.approx(13.75)
    assert dep["by"] == {"wet": 10.5, "dry": 2.0, "recyclable": 1.25, "hazardous": 0.0}
    assert dep["coverage"] == 0.6667  # 2 / 3
    # One hut on fire makes its district and the city critical.
    district = next(d for d in doc["districts"] if d["id"] == "pudong")
    assert district["status"] == "critical"
    assert doc["status"] == "critical"
    assert pick(doc, "city", "waste.fire_risk")["status"] == "critical"
    detail = api.client.get("/v1/vitals/districts/pudong").json()
    hut = next(s for s in detail["sites"] if s["id"] == "w1")
    fill = next(i for i in hut["indicators"] if i["id"] == "waste.fill_pct_mean")
    assert (fill["value"], fill["status"]) == (70.0, "attention")
    drops = next(i for i in hut["indicators"] if i["id"] == "waste.offhours_dropoffs_today")
    assert drops["value"] == 2
    assert hut["status"] == "warning"


def test_energy_figures_key_consumers_and_site_contract(api: Api, db: psycopg.Connection) -> None:
    device(
        db, "m1", "energy", district="huangpu", site="Tower", key_consumer=True, contract_kw=1000
    )
    device(db, "m2", "energy", district="huangpu", site="Tower")
    device(db, "m3", "energy", district="huangpu", site="Mall", key_consumer=True)
    energy(db, "m1", NOW - 30 * S, kw=500, voltage=230, pf=0.85, adjustable=50)
    energy(db, "m2", NOW - 30 * S, kw=450, voltage=240, pf=0.95, adjustable=0)
    energy(db, "m3", NOW - 181 * S, kw=999, voltage=230, pf=0.99)  # offline (3 x 60 s)
    for dev, day, kwh in [
        ("m1", "2026-11-24", 120.5),
        ("m2", "2026-11-24", 79.5),
        ("m2", "2026-11-23", 1000.0),
        ("m3", "2026-11-24", 50.0),
    ]:
        db.execute(
            "INSERT INTO energy_daily (device_id, day, consumption_kwh, last_ts) "
            "VALUES (%s, %s, %s, %s)",
            (dev, day, kwh, NOW),
        )
    for ts, value in [(NOW - timedelta(hours=2), 1200.0), (NOW - timedelta(hours=11), 5000.0)]:
        db.execute(
            "INSERT INTO indicator_samples (indicator, scope, ts, value) "
            "VALUES ('energy.load_kw', 'huangpu', %s, %s)",
            (ts, value),
        )
    doc = api.vitals()
    assert pick(doc, "huangpu", "energy.load_kw")["value"] == 950
    assert pick(doc, "huangpu", "energy.adjustable_kw")["value"] == 50
    assert pick(doc, "huangpu", "energy.consumption_kwh_today")["value"] == pytest.approx(200)
    assert pick(doc, "huangpu", "energy.co2_t_today")["value"] == pytest.approx(0.084)
    # 5000 kW was yesterday (local); today's 1200 kW beats the current 950 kW.
    assert pick(doc, "huangpu", "energy.peak_load_kw_today")["value"] == 1200
    pf = pick(doc, "huangpu", "energy.low_power_factor")
    assert (pf["value"], pf["status"]) == (1, "attention")
    volt = pick(doc, "huangpu", "energy.voltage_deviation")
    assert volt["value"] == 1
    key = pick(doc, "huangpu", "energy.key_consumer_monitoring_rate")
    assert (key["value"], key["status"]) == (0.5, "warning")
    detail = api.client.get("/v1/vitals/districts/huangpu").json()
    tower = next(s for s in detail["sites"] if s["id"] == "Tower")
    load = next(i for i in tower["indicators"] if i["id"] == "energy.load_kw")
    assert (load["value"], load["status"]) == (950, "attention")  # >= 0.9 x 1000


def test_device_health_figures(api: Api, db: psycopg.Connection) -> None:
    device(db, "p1", "parking", district="yangpu")
    device(db, "p2", "parking", district="yangpu")
    parking(db, "p1", NOW - 5 * S, occupied=False)
    parking(db, "p2", NOW - 5 * S, occupied=False)
    device(db, "u1", "parking", auto=True)  # auto-registered, unassigned
    parking(db, "u1", NOW - 5 * S, occupied=True)
    for dev, bucket, lo, hi, n in [
        ("p1", NOW - timedelta(minutes=30), 10, 19, 8),
        ("p1", NOW - timedelta(minutes=20), 20, 29, 10),
        ("p2", NOW - timedelta(minutes=70), 1, 100, 50),  # older than an hour
    ]:
        db.execute(
            "INSERT INTO seq_10m (device_id, bucket, min_seq, max_seq, n) "
            "VALUES (%s, %s, %s, %s, %s)",
            (dev, bucket, lo, hi, n),
        )
    minute = NOW.replace(second=0)
    lags = [0] * 12
    lags[0], lags[1], lags[2] = 50, 40, 10
    slow_lags = [0] * 12
    slow_lags[-1] = 100
    for m, collector, received, rejected, counts in [
        (minute, "c1", 100, 2, lags),
        (minute - timedelta(minutes=6), "c1", 100, 8, slow_lags),  # lag window is 5 min
        (minute - timedelta(minutes=11), "c1", 100, 100, slow_lags),  # outside both
        (minute, "dead-letter-replay", 500, 0, slow_lags),  # replays are not traffic
    ]:
        db.execute(
            "INSERT INTO ingest_minutely (minute, collector, received, stored, duplicates, "
            "rejected, lag_counts) VALUES (%s, %s, %s, 0, 0, %s, %s)",
            (m, collector, received, rejected, counts),
        )
    doc = api.vitals()
    comp = pick(doc, "yangpu", "devices.completeness_1h")
    assert (comp["value"], comp["status"]) == (pytest.approx(18 / 20), "warning")
    lag = pick(doc, "city", "devices.ingest_lag_p95_s")
    # rank 95 of 100 falls in (0.25, 0.5] holding ranks 91-100: 0.25 + 0.25 x 5/10,
    # served to 0.01 s
    assert lag["value"] == 0.38
    assert lag["status"] == "normal"
    rej = pick(doc, "city", "devices.rejected_ratio_10m")
    assert (rej["value"], rej["status"]) == (pytest.approx(10 / 200), "warning")
    un = pick(doc, "city", "devices.unassigned")
    assert (un["value"], un["status"]) == (1, "attention")
    # The unregistered device counts for the city, in no district.
    assert pick(doc, "city", "parking.occupancy_ratio")["value"] == 0.3333
    assert pick(doc, "yangpu", "parking.occupancy_ratio")["value"] == 0


def test_stale_when_newest_reading_older_than_three_intervals(
    api: Api, db: psycopg.Connection
) -> None:
    device(db, "e1", "energy", district="qingpu")
    energy(db, "e1", NOW - 200 * S, kw=10)
    seen(db, "e1", "energy", NOW - 10 * S)  # a status message keeps it online
    fig = api.figure("qingpu", "energy.load_kw")
    assert fig["value"] == 10
    assert fig["coverage"] == 1
    assert fig["data_age_s"] == pytest.approx(200)
    assert fig["stale"] is True
    api.clock.now = NOW - 150 * S
    energy(db, "e1", NOW - 200 * S, kw=10)
    fig = api.figure("qingpu", "energy.load_kw")
    assert fig["stale"] is False


def _write(
    writer: BatchWriter, db: psycopg.Connection, msgs: list[tuple[str, bytes, datetime]]
) -> None:
    result = writer.write(db, [Incoming(t, p, r) for t, p, r in msgs])
    assert not result.rejected, result.rejected


def test_meter_reset_late_reading_midnight_and_unregistered_meter_through_the_store(
    api: Api, database_url: str
) -> None:
    # 00:00:30 on 24 November in Shanghai.
    now = datetime(2026, 11, 23, 16, 0, 30, tzinfo=UTC)
    api.clock.now = now
    writer = BatchWriter(prefix="city", limits=Limits(), local_tz="Asia/Shanghai", collector="t")

    def msg(dev: str, local: str, kw: float, kwh: float) -> tuple[str, bytes, datetime]:
        ts = datetime.fromisoformat(f"2026-11-{local}+08:00")
        body = f'{{"ts": "{ts.isoformat()}", "active_power_kw": {kw}, "energy_kwh": {kwh}}}'
        return f"city/energy/{dev}/telemetry", body.encode(), ts.astimezone(UTC) + S

    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, district) VALUES ('m1', 'energy', 'huangpu')"
        )
        conn.commit()
        _write(
            writer, conn, [msg("m1", "23T23:58:00", 100, 1000), msg("m1", "23T23:59:00", 100, 1010)]
        )
        _write(writer, conn, [msg("m1", "24T00:00:00", 100, 1015)])  # first of the day
        _write(writer, conn, [msg("m1", "24T00:00:20", 100, 1020)])  # +5
        _write(writer, conn, [msg("m1", "24T00:00:25", 120, 3)])  # reset: +3
        _write(writer, conn, [msg("m1", "24T00:00:10", 999, 1017)])  # late: ignored
        _write(writer, conn, [msg("m1", "24T00:00:27", 120, 2.5)])  # glitch, not a reset: +0
        _write(writer, conn, [msg("m1", "24T00:00:28", 120, 3)])  # +0.5
        _write(
            writer, conn, [msg("em-x", "24T00:00:00", 10, 50), msg("em-x", "24T00:00:20", 10, 52)]
        )
    doc = api.vitals()
    assert pick(doc, "huangpu", "energy.consumption_kwh_today")["value"] == pytest.approx(8.5)
    assert pick(doc, "huangpu", "energy.load_kw")["value"] == 120  # the late 999 kW is history
    assert pick(doc, "city", "energy.consumption_kwh_today")["value"] == pytest.approx(10.5)
    assert pick(doc, "city", "energy.load_kw")["value"] == 130
    assert pick(doc, "city", "devices.unassigned")["value"] == 1
    # 10.5 kWh x 0.42 kg/kWh = 4.41 kg, served to 0.001 t
    assert pick(doc, "city", "energy.co2_t_today")["value"] == 0.004
