"""Faults are normal operating conditions: kill, broker restart, database outage.

Each test publishes a load of distinct readings while the fault happens and then
checks that every reading is stored exactly once and that the collector's counters
add up (received = stored + duplicates + dead-lettered).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.cli.localstack import MosquittoServer, PostgresServer
from cityvitals.settings import parse_mqtt_url
from tests.fix_services import CollectorProcess, wait_until
from tests.store.refusal import REFUSED_KW, install_refusal

pytestmark = pytest.mark.slow
Factory = Callable[..., CollectorProcess]
N = 20_000
OUTAGE_S = 60.0


def _rss_bytes(c: CollectorProcess) -> int:
    assert c.proc is not None
    for line in Path(f"/proc/{c.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _load(prefix: str, n: int = N) -> list[tuple[str, bytes]]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [
        (
            f"{prefix}/energy/em-{i % 100:03d}/telemetry",
            json.dumps(
                {
                    "ts": (base - timedelta(seconds=i // 100)).isoformat(),
                    "active_power_kw": float(i % 977),
                    "seq": i // 100,
                }
            ).encode(),
        )
        for i in range(n)
    ]


def _acked(info: mqtt.MQTTMessageInfo, end: float) -> bool:
    # paho raises instead of returning False when the connection dropped meanwhile.
    try:
        info.wait_for_publish(timeout=max(0.1, min(10.0, end - time.monotonic())))
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class ResilientPublisher:
    """Publishes QoS 1 in windows and re-publishes whatever the broker did not ack.

    A re-published message may reach the collector twice; the unique keys absorb it.
    """

    def __init__(self, mqtt_url: str) -> None:
        target = parse_mqtt_url(mqtt_url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        self.acked = 0

    def publish_all(
        self, messages: list[tuple[str, bytes]], window: int = 2000, deadline_s: float = 180
    ) -> None:
        end = time.monotonic() + deadline_s
        todo = list(messages)
        while todo:
            if time.monotonic() > end:
                raise AssertionError(f"{len(todo)} messages never acknowledged by the broker")
            chunk, todo = todo[:window], todo[window:]
            infos = [(m, self.client.publish(m[0], m[1], qos=1)) for m in chunk]
            missed = []
            for m, info in infos:
                if _acked(info, end):
                    self.acked += 1
                else:
                    missed.append(m)
            if missed:
                wait_until(self.client.is_connected, 60, "publisher reconnected")
                todo = missed + todo

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stored(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM readings_energy").fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return -1


def _assert_counters_add_up(metrics: dict[str, float]) -> None:
    received = metrics["cityvitals_collector_messages_received_total"]
    stored = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_readings_stored_total")
    )
    dups = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_duplicates_total")
    )
    rejected = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_rejected_total")
    )
    assert received == stored + dups + rejected


def _record(scenario: str, published: int, stored: int, *metrics: dict[str, float]) -> None:
    """Append the scenario's counts to faults.jsonl (in CITYVITALS_TEST_ARTIFACTS, else
    the temporary folder) for the reports; never into the working tree."""

    def total(prefix: str) -> float:
        return sum(v for m in metrics for k, v in m.items() if k.startswith(prefix))

    out = Path(os.environ.get("CITYVITALS_TEST_ARTIFACTS") or tempfile.gettempdir())
    out.mkdir(parents=True, exist_ok=True)
    with (out / "faults.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "scenario": scenario,
                    "published": published,
                    "stored_rows": stored,
                    "received": total("cityvitals_collector_messages_received_total"),
                    "duplicates": total("cityvitals_collector_duplicates_total"),
                    "dead_lettered": total("cityvitals_collector_rejected_total"),
                }
            )
            + "\n"
        )


def _received(c: CollectorProcess) -> float:
    try:
        return c.metrics().get("cityvitals_collector_messages_received_total", 0.0)
    except OSError:
        return 0.0


def test_readings_redelivered_after_sigkill_are_stored_once(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    first = collector_factory(
        database_url, mqtt_url, topic_prefix, client_id="killme", batch_max="500"
    )
    first.start_and_wait()
    pub = ResilientPublisher(mqtt_url)
    load = _load(topic_prefix)
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    wait_until(lambda: _received(first) >= 2000, 60, "collector mid-load")
    first.stop(signal.SIGKILL)
    second = collector_factory(database_url, mqtt_url, topic_prefix, client_id="killme")
    second.start_and_wait()
    sender.join(timeout=180)
    pub.close()
    wait_until(lambda: _stored(database_url) == N, 120, f"{N} readings stored")
    assert pub.acked == N
    _assert_counters_add_up(second.metrics())
    _record("collector SIGKILL mid-load", N, _stored(database_url), second.metrics())


def test_database_outage_during_load_loses_nothing(
    collector_factory: Factory,
    private_db: tuple[PostgresServer, str],
    mqtt_url: str,
    topic_prefix: str,
) -> None:
    server, url = private_db
    c = collector_factory(
        url,
        mqtt_url,
        topic_prefix,
        db_retry_min_s="0.2",
        db_retry_max_s="1",
        receive_maximum="5000",
    )
    c.start_and_wait()
    pub = ResilientPublisher(mqtt_url)
    load = _load(topic_prefix)
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    wait_until(lambda: _stored(url) >= 1000, 60, "some readings stored")
    server.stop()
    wait_until(
        lambda: c.metrics().get("cityvitals_collector_database_up") == 0.0,
        30,
        "collector noticed the outage",
    )
    # The outage of docs/targets.md: a minute, while the load goes on. Memory stays
    # bounded by the receive window: the broker holds the rest.
    down_since = time.monotonic()
    peak_buffer, peak_rss = 0.0, 0
    while time.monotonic() - down_since < OUTAGE_S:
        peak_buffer = max(peak_buffer, c.metrics()["cityvitals_collector_buffer_messages"])
        peak_rss = max(peak_rss, _rss_bytes(c))
        assert c.metrics()["cityvitals_collector_database_up"] == 0.0
        time.sleep(1.0)  # poll interval inside the outage's deadline loop
    assert peak_buffer <= 5000 + 500  # the receive window (+ one batch in hand)
    assert peak_rss < 300 * 2**20
    server.start()
    sender.join(timeout=180)
    pub.close()
    wait_until(lambda: _stored(url) == N, 120, f"{N} readings stored after the outage")
    # The last batch's rows are visible a moment before the collector counts them.
    energy = (
        'cityvitals_collector_readings_stored_total{kind="energy"}',
        'cityvitals_collector_duplicates_total{kind="energy"}',
    )
    wait_until(lambda: sum(c.metrics()[k] for k in energy) >= N, 30, "the last batch counted")
    m = c.metrics()
    assert m["cityvitals_collector_database_up"] == 1.0
    _assert_counters_add_up(m)
    # A commit the server made just before it went down may never have been confirmed
    # to the collector, which then stores the batch again: its rows come back as
    # duplicates, absorbed by the keys (the table holds each reading once, above).
    stored = m['cityvitals_collector_readings_stored_total{kind="energy"}']
    assert stored + m['cityvitals_collector_duplicates_total{kind="energy"}'] >= N
    assert stored <= N
    _record(f"database down {OUTAGE_S:.0f} s during load", N, _stored(url), m)


def _missing(database_url: str, n: int = N) -> list[int]:
    with psycopg.connect(database_url) as conn:
        have = {
            (d, int(q))
            for d, q in conn.execute("SELECT device_id, seq FROM readings_energy").fetchall()
        }
    return [i for i in range(n) if (f"em-{i % 100:03d}", i // 100) not in have]


def _wait_all_stored(database_url: str, what: str, *collectors: CollectorProcess) -> None:
    try:
        wait_until(lambda: _stored(database_url) == N, 120, what)
    except AssertionError as err:
        missing = _missing(database_url)
        logs = "\n".join(c.log()[-3000:] for c in collectors)
        raise AssertionError(
            f"{err}; stored {_stored(database_url)}, missing message indexes "
            f"{missing[:20]}…{missing[-5:]} ({len(missing)})\n{logs}"
        ) from None


def _restart_broker_under_load(broker: MosquittoServer, database_url: str, prefix: str) -> None:
    """Publish the load, restart the broker once some of it is stored, finish the load."""
    pub = ResilientPublisher(broker.url)
    sender = threading.Thread(target=pub.publish_all, args=(_load(prefix),))
    sender.start()
    wait_until(lambda: _stored(database_url) >= 2000, 60, "some readings stored")
    broker.stop()
    broker.start()
    sender.join(timeout=240)
    pub.close()


def test_broker_restart_during_load_loses_nothing_with_the_default_configuration(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    broker: str,
    database_url: str,
    topic_prefix: str,
) -> None:
    # The default (CITYVITALS_SHARED_SUBSCRIPTION=auto) on either broker: a shared
    # subscription on 2.1 with persist-sqlite, which keeps it across the restart; a
    # plain persistent one on 2.0, which keeps only that.
    url = private_mosquitto.url
    c = collector_factory(
        database_url, url, topic_prefix, reconnect_min_s="0.5", reconnect_max_s="2"
    )
    c.start_and_wait()
    shared = c.metrics()["cityvitals_collector_shared_subscription"]
    assert shared == (1.0 if broker == "mosquitto-2.1" else 0.0)
    _restart_broker_under_load(private_mosquitto, database_url, topic_prefix)
    _wait_all_stored(database_url, f"{N} readings stored after the restart", c)
    m = c.metrics()
    assert m['cityvitals_collector_reconnects_total{target="mqtt"}'] >= 1
    _assert_counters_add_up(m)
    _record(f"broker restart during load ({broker}, default config)", N, N, m)


def test_two_collectors_sharing_lose_nothing_across_a_broker_restart(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    broker: str,
    database_url: str,
    topic_prefix: str,
) -> None:
    if broker != "mosquitto-2.1":
        pytest.skip(
            "Mosquitto 2.0 drops a shared subscription at its restart (pinned down by "
            "test_what_a_broker_restart_keeps_for_an_offline_collector); the default "
            "configuration does not share there"
        )
    url = private_mosquitto.url
    cs = [
        collector_factory(database_url, url, topic_prefix, reconnect_min_s="0.5") for _ in range(2)
    ]
    for c in cs:
        c.start_and_wait()
    assert all(c.metrics()["cityvitals_collector_shared_subscription"] == 1.0 for c in cs)
    _restart_broker_under_load(private_mosquitto, database_url, topic_prefix)
    _wait_all_stored(database_url, f"{N} readings stored by two collectors", *cs)
    ms = [c.metrics() for c in cs]
    assert all(m["cityvitals_collector_messages_received_total"] > 0 for m in ms)
    for m in ms:
        _assert_counters_add_up(m)
    _record(f"broker restart, two collectors sharing ({broker})", N, N, *ms)


def test_a_collector_scaled_away_with_sigterm_strands_nothing(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    broker: str,
    database_url: str,
    topic_prefix: str,
) -> None:
    # Two members of a shared subscription; one is stopped for good mid-load. It leaves
    # the group (unsubscribes, stores what was queued for it, ends its session), so the
    # broker deals every later reading to the one that stays.
    url = private_mosquitto.url
    share = {"shared_subscription": "on"}
    stays = collector_factory(database_url, url, topic_prefix, client_id="stays", **share)
    goes = collector_factory(database_url, url, topic_prefix, client_id="goes", **share)
    stays.start_and_wait()
    goes.start_and_wait()
    wait_until(lambda: _alive(database_url) == 2, 30, "both collectors' heartbeats")
    pub = ResilientPublisher(url)
    sender = threading.Thread(target=pub.publish_all, args=(_load(topic_prefix),))
    sender.start()
    wait_until(lambda: _received(goes) >= 2000, 60, "the leaving collector mid-load")
    assert goes.stop(signal.SIGTERM) == 0
    assert '"left_group": true' in goes.log(), goes.log()[-3000:]
    sender.join(timeout=240)
    pub.close()
    _wait_all_stored(database_url, f"{N} readings stored after one collector left", stays)
    # Its session is gone: a connection under its client id finds none.
    probe = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="goes", protocol=mqtt.MQTTv5
    )
    present: list[bool] = []
    probe.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    target = parse_mqtt_url(url)
    probe.connect(target.host, target.port, clean_start=False)
    probe.loop_start()
    wait_until(lambda: bool(present), 10, "probe connected")
    probe.disconnect()
    probe.loop_stop()
    assert present == [False]
    _assert_counters_add_up(stays.metrics())
    _record(f"collector scaled away with SIGTERM ({broker})", N, N, stays.metrics())


def test_the_last_collector_stopped_keeps_its_session(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    # Alone, a collector stopped with SIGTERM does not leave: the readings published
    # until it is back wait in its session.
    c = collector_factory(database_url, mqtt_url, topic_prefix, client_id="alone")
    c.start_and_wait()
    assert c.stop(signal.SIGTERM) == 0
    assert '"left_group": false' in c.log()
    pub = ResilientPublisher(mqtt_url)
    pub.publish_all(_load(topic_prefix, 500))
    pub.close()
    back = collector_factory(database_url, mqtt_url, topic_prefix, client_id="alone")
    back.start_and_wait()
    wait_until(lambda: _stored(database_url) == 500, 60, "the readings queued while away")


def _alive(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM collectors WHERE stopped_at IS NULL AND left_at IS NULL"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("mode", ["off", "on"])
def test_what_a_broker_restart_keeps_for_an_offline_collector(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    broker: str,
    database_url: str,
    topic_prefix: str,
    mode: str,
) -> None:
    # Pins down the broker behaviour the collector's choice rests on: both brokers
    # restore a plain persistent subscription (`off`) after a restart and queue for it
    # while the collector is away; only 2.1 with persist-sqlite restores a shared one
    # (`on`): 2.0 drops what is published before the collector subscribes again. If a
    # broker upgrade changes this, this test says so.
    url = private_mosquitto.url
    c = collector_factory(database_url, url, topic_prefix, shared_subscription=mode)
    c.start_and_wait()
    assert c.stop(signal.SIGTERM) == 0
    private_mosquitto.stop()
    private_mosquitto.start()
    pub = ResilientPublisher(url)
    pub.publish_all(_load(topic_prefix, 200))
    pub.close()
    c.start_and_wait()
    pub = ResilientPublisher(url)
    pub.publish_all([(f"{topic_prefix}/energy/em-after/telemetry", b'{"active_power_kw": 1}')])
    pub.close()
    wait_until(lambda: _energy_rows(database_url, "em-after") == 1, 30, "the reading after")
    if mode == "off" or broker == "mosquitto-2.1":
        wait_until(lambda: _energy_rows(database_url) == 201, 30, "the 200 queued readings")
    else:
        assert _energy_rows(database_url) == 1


def _energy_rows(url: str, device: str | None = None) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings_energy WHERE %s::text IS NULL OR device_id = %s",
            (device, device),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_shared_subscription_on_a_broker_that_drops_it_is_warned_about(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    # The session broker is Debian's Mosquitto 2.0.
    auto = collector_factory(database_url, mqtt_url, topic_prefix)
    forced = collector_factory(database_url, mqtt_url, topic_prefix, shared_subscription="on")
    auto.start_and_wait()
    forced.start_and_wait()
    assert auto.metrics()["cityvitals_collector_shared_subscription"] == 0.0
    assert forced.metrics()["cityvitals_collector_shared_subscription"] == 1.0
    assert "subscription_plain" in auto.log()
    assert "mosquitto version 2.0" in auto.log()
    assert "subscription_can_lose" in forced.log()
    assert "persist-sqlite" in forced.log()


def test_queued_messages_for_an_absent_collector_survive_beyond_the_stock_limit(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The stock Mosquitto limit is 1,000 queued messages per session; ours must keep
    # everything published while the collector is away.
    c = collector_factory(database_url, mqtt_url, topic_prefix, client_id="away")
    c.start_and_wait()
    c.stop()
    pub = ResilientPublisher(mqtt_url)
    pub.publish_all(_load(topic_prefix))
    pub.close()
    back = collector_factory(database_url, mqtt_url, topic_prefix, client_id="away")
    back.start_and_wait()
    wait_until(lambda: _stored(database_url) == N, 120, f"{N} queued readings stored")
    _record("collector away while 20,000 are published", N, _stored(database_url), back.metrics())


def test_a_queue_resumed_after_an_absence_is_held_to_the_receive_window(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    # Debian's Mosquitto 2.0 sends a resumed session's whole queue at once, past the
    # client's Receive Maximum; the collector stops reading at a full window, so what
    # it holds stays bounded by the window whatever the depth of the queue.
    window = 1000
    settings = {"client_id": "deep", "receive_maximum": str(window), "batch_max": "200"}
    c = collector_factory(database_url, mqtt_url, topic_prefix, **settings)
    c.start_and_wait()
    c.stop()
    pub = ResilientPublisher(mqtt_url)
    pub.publish_all(_load(topic_prefix))
    pub.close()
    back = collector_factory(database_url, mqtt_url, topic_prefix, **settings)
    back.start_and_wait()
    peak = 0.0
    end = time.monotonic() + 120
    while _stored(database_url) < N and time.monotonic() < end:
        peak = max(peak, back.metrics().get("cityvitals_collector_buffer_messages", 0.0))
        time.sleep(0.02)  # poll interval, bounded by `end`
    assert _stored(database_url) == N
    # Received and not yet taken for a batch: never more than the window.
    assert 0 < peak <= window


def test_readings_the_database_refuses_mid_load_stall_nothing(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    # One reading in a thousand is refused by the database itself: each becomes an
    # `unstorable` dead letter, everything around it is stored, and the database never
    # looks down (a refusal of the data is not an outage).
    install_refusal(database_url)
    load = _load(topic_prefix)
    poison = set(range(500, N, 1000))
    for i in poison:
        topic, body = load[i]
        doc = json.loads(body)
        doc["active_power_kw"] = REFUSED_KW
        load[i] = (topic, json.dumps(doc).encode())
    c = collector_factory(database_url, mqtt_url, topic_prefix)
    c.start_and_wait()
    pub = ResilientPublisher(mqtt_url)
    started = time.monotonic()
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    down_seen = False
    while _stored(database_url) < N - len(poison) and time.monotonic() - started < 120:
        down_seen |= c.metrics()["cityvitals_collector_database_up"] == 0.0
        time.sleep(0.2)  # poll interval inside the deadline loop
    sender.join(timeout=60)
    pub.close()
    elapsed = time.monotonic() - started
    assert _stored(database_url) == N - len(poison), f"after {elapsed:.1f} s"
    assert not down_seen
    m = c.metrics()
    assert m['cityvitals_collector_rejected_total{reason="unstorable"}'] == len(poison)
    assert m["cityvitals_collector_database_refusals_total"] >= len(poison)
    assert "database_unavailable" not in c.log()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT payload, detail FROM dead_letters WHERE reason = 'unstorable'"
        ).fetchall()
    assert sorted(bytes(p) for p, _ in rows) == sorted(load[i][1] for i in poison)
    assert all("22023" in d for _, d in rows)
    _assert_counters_add_up(m)
    _record(
        f"database refuses 1 reading in 1000 ({elapsed:.1f} s for all)",
        N,
        _stored(database_url),
        m,
    )
