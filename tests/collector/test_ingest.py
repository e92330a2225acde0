"""The collector end to end: real Mosquitto, real PostgreSQL, the collector as a process."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cityvitals.reasons import Reason
from tests.fix_services import CollectorProcess, Publisher, wait_until
from tests.store.refusal import REFUSED_KW, install_refusal

Factory = Callable[..., CollectorProcess]


def _count(url: str, query: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, args).fetchone()
    return int(row[0]) if row else 0


def _iso(dt: datetime) -> str:
    return dt.isoformat()


@pytest.fixture
def collector(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> CollectorProcess:
    c = collector_factory(database_url, mqtt_url, topic_prefix)
    c.start_and_wait()
    return c


def test_readings_of_every_kind_are_stored_with_latest_state_and_auto_registration(
    collector: CollectorProcess, publisher: Publisher, database_url: str, topic_prefix: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    p = topic_prefix
    publisher.publish_all(
        [
            (
                f"{p}/parking/pk-1/telemetry",
                json.dumps(
                    {
                        "ts": _iso(now),
                        "occupied": True,
                        "battery_v": 3.58,
                        "rssi_dbm": -87,
                        "seq": 1,
                        "firmware": "ignored",
                    }
                ).encode(),
            ),
            (
                f"{p}/waste/ws-1/telemetry",
                json.dumps(
                    {
                        "ts": int(now.timestamp() * 1000),
                        "bins": [
                            {"category": "wet", "fill_pct": 72.5, "weight_kg": 38.2},
                            {"category": "dry", "fill_pct": 40.0},
                        ],
                        "gas": {"h2s_ppm": 0.4, "nh3_ppm": 3.1, "ch4_pct_lel": 1.0},
                        "temp_c": 24.5,
                        "seepage": False,
                        "door_open": False,
                        "battery_v": 12.1,
                        "seq": 88,
                    }
                ).encode(),
            ),
            (
                f"{p}/energy/em-1/telemetry",
                json.dumps(
                    {
                        "ts": _iso(now),
                        "active_power_kw": 182.4,
                        "energy_kwh": 1203345.2,
                        "voltage_v": 229.8,
                        "power_factor": 0.94,
                        "adjustable_kw": 25.0,
                    }
                ).encode(),
            ),
            (f"{p}/energy/em-2/telemetry", b'{"active_power_kw": -12.5}'),
            (
                f"{p}/waste/ws-1/event",
                json.dumps(
                    {
                        "ts": _iso(now),
                        "type": "off_hours_dropoff",
                        "id": "cam3-0007",
                        "confidence": 0.93,
                    }
                ).encode(),
            ),
            (f"{p}/parking/pk-1/status", b"online"),
        ]
    )
    wait_until(
        lambda: collector.metrics().get("cityvitals_collector_messages_received_total") == 6,
        what="6 messages handled",
    )
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT occupied, battery_v, seq FROM readings_parking").fetchall() == [
            (True, 3.58, 1)
        ]
        assert conn.execute(
            "SELECT fill_max, fill_mean, bins->0->>'category' FROM latest_waste"
        ).fetchall() == [(72.5, 56.25, "wet")]
        energy = conn.execute(
            "SELECT device_id, ts_from_broker FROM readings_energy ORDER BY device_id"
        ).fetchall()
        assert energy == [("em-1", False), ("em-2", True)]
        assert conn.execute("SELECT type, attrs->>'confidence' FROM events").fetchall() == [
            ("off_hours_dropoff", "0.93")
        ]
        assert conn.execute(
            "SELECT status_online FROM device_state WHERE device_id = 'pk-1'"
        ).fetchone() == (True,)
        registered = conn.execute(
            "SELECT device_id, kind, district, auto_registered FROM devices ORDER BY device_id"
        ).fetchall()
    assert registered == [
        ("em-1", "energy", None, True),
        ("em-2", "energy", None, True),
        ("pk-1", "parking", None, True),
        ("ws-1", "waste", None, True),
    ]
    m = collector.metrics()
    assert m["cityvitals_collector_devices_autoregistered_total"] == 4


def test_every_reason_code_reaches_dead_letters_with_its_detail(
    collector: CollectorProcess, publisher: Publisher, database_url: str, topic_prefix: str
) -> None:
    p = topic_prefix
    now = datetime.now(UTC)
    install_refusal(database_url)
    cases: dict[Reason, tuple[str, bytes, str]] = {
        Reason.UNKNOWN_KIND: (f"{p}/water/wm-1/telemetry", b"{}", "topic.kind"),
        Reason.BAD_TOPIC: (f"{p}/parking/bad id!/telemetry", b"{}", "topic.device_id"),
        Reason.TOO_LARGE: (
            f"{p}/parking/pk-1/telemetry",
            b'{"occupied": true, "x": "' + b"a" * 9000 + b'"}',
            "payload",
        ),
        Reason.INVALID_JSON: (f"{p}/parking/pk-1/telemetry", b'{"occupied": tru', "payload"),
        Reason.SCHEMA: (f"{p}/parking/pk-1/telemetry", b'{"occupied": "yes"}', "occupied"),
        Reason.OUT_OF_RANGE: (
            f"{p}/parking/pk-1/telemetry",
            b'{"occupied": true, "battery_v": 7}',
            "battery_v",
        ),
        Reason.CLOCK_SKEW: (
            f"{p}/parking/pk-1/telemetry",
            json.dumps({"occupied": True, "ts": _iso(now + timedelta(minutes=10))}).encode(),
            "ts",
        ),
        Reason.TOO_OLD: (
            f"{p}/parking/pk-1/telemetry",
            json.dumps({"occupied": True, "ts": _iso(now - timedelta(days=8))}).encode(),
            "ts",
        ),
        Reason.UNSTORABLE: (
            f"{p}/energy/em-1/telemetry",
            json.dumps({"active_power_kw": REFUSED_KW}).encode(),
            "22023",
        ),
    }
    publisher.publish_all([(t, b) for t, b, _ in cases.values()])
    wait_until(
        lambda: _count(database_url, "SELECT count(*) FROM dead_letters") == len(cases),
        what="all dead letters",
    )
    with psycopg.connect(database_url) as conn:
        rows = {
            r: (t, bytes(b), d)
            for r, t, b, d in conn.execute(
                "SELECT reason, topic, payload, detail FROM dead_letters"
            ).fetchall()
        }
    for reason, (topic, body, field) in cases.items():
        assert rows[reason.value][0] == topic
        assert rows[reason.value][1] == body
        assert field in rows[reason.value][2], (reason, rows[reason.value][2])
    m = collector.metrics()
    for reason in Reason:
        assert m[f'cityvitals_collector_rejected_total{{reason="{reason.value}"}}'] == 1
    assert _count(database_url, "SELECT count(*) FROM readings_parking") == 0


def test_same_readings_published_twice_are_stored_once(
    collector: CollectorProcess, publisher: Publisher, database_url: str, topic_prefix: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    msgs = [
        (
            f"{topic_prefix}/energy/em-{i % 7}/telemetry",
            json.dumps(
                {"ts": _iso(now - timedelta(minutes=i)), "active_power_kw": float(i)}
            ).encode(),
        )
        for i in range(200)
    ]
    publisher.publish_all(msgs)
    publisher.publish_all(msgs)
    wait_until(
        lambda: collector.metrics().get("cityvitals_collector_messages_received_total") == 400,
        what="400 messages handled",
    )
    assert _count(database_url, "SELECT count(*) FROM readings_energy") == 200
    m = collector.metrics()
    assert m['cityvitals_collector_readings_stored_total{kind="energy"}'] == 200
    assert m['cityvitals_collector_duplicates_total{kind="energy"}'] == 200


def test_late_reading_is_stored_and_leaves_latest_state_unchanged(
    collector: CollectorProcess, publisher: Publisher, database_url: str, topic_prefix: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    topic = f"{topic_prefix}/parking/pk-9/telemetry"
    publisher.publish_all([(topic, json.dumps({"ts": _iso(now), "occupied": True}).encode())])
    wait_until(
        lambda: _count(database_url, "SELECT count(*) FROM latest_parking") == 1,
        what="latest state",
    )
    late = now - timedelta(minutes=30)
    publisher.publish_all([(topic, json.dumps({"ts": _iso(late), "occupied": False}).encode())])
    wait_until(
        lambda: _count(database_url, "SELECT count(*) FROM readings_parking") == 2,
        what="late reading stored",
    )
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT ts, occupied FROM latest_parking").fetchone() == (now, True)


def test_sigterm_flushes_and_exits_cleanly(
    collector: CollectorProcess, publisher: Publisher, database_url: str, topic_prefix: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    publisher.publish_all(
        [
            (
                f"{topic_prefix}/parking/pk-{i}/telemetry",
                json.dumps({"ts": _iso(now), "occupied": i % 2 == 0}).encode(),
            )
            for i in range(50)
        ]
    )
    wait_until(
        lambda: collector.metrics().get("cityvitals_collector_messages_received_total") == 50,
        what="50 handled",
    )
    assert collector.stop() == 0
    assert "collector_stopped" in collector.log()


def test_idle_collector_reports_the_database_up_before_any_message(
    collector: CollectorProcess,
) -> None:
    # Alert rules page on database_up == 0; an idle collector must not look down.
    wait_until(
        lambda: collector.metrics().get("cityvitals_collector_database_up") == 1.0,
        20,
        "database_up 1 on an idle collector",
    )


def test_two_collectors_on_one_host_without_client_ids_share_the_load(
    collector_factory: Factory,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    publisher: Publisher,
) -> None:
    # Without CITYVITALS_CLIENT_ID the id comes from the host name and the metrics port,
    # so two collectors on one host neither take each other's session nor lose it on a
    # restart. The session broker is Debian's 2.0, where `auto` would not share.
    share = {"client_id": "", "shared_subscription": "on"}
    first = collector_factory(database_url, mqtt_url, topic_prefix, **share)
    second = collector_factory(database_url, mqtt_url, topic_prefix, **share)
    first.start_and_wait()
    second.start_and_wait()
    now = datetime.now(UTC).replace(microsecond=0)
    publisher.publish_all(
        [
            (
                f"{topic_prefix}/energy/em-{i % 50}/telemetry",
                json.dumps(
                    {"ts": _iso(now - timedelta(seconds=i)), "active_power_kw": 1.0}
                ).encode(),
            )
            for i in range(2000)
        ]
    )
    wait_until(
        lambda: _count(database_url, "SELECT count(*) FROM readings_energy") == 2000,
        what="2000 readings stored",
    )
    received = [
        c.metrics()["cityvitals_collector_messages_received_total"] for c in (first, second)
    ]
    assert sum(received) == 2000
    assert min(received) > 0  # both took a share
    for c in (first, second):
        assert c.log().count("mqtt_disconnected") == 0
