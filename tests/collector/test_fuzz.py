"""Hypothesis: arbitrary topics and payloads never crash parsing, and through the real
pipeline every message is accounted for exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityvitals.payloads import DeviceStatus, Event, Limits, Reading, parse_message
from cityvitals.reasons import Rejection
from tests.collector.test_ingest import Factory
from tests.fix_services import CollectorProcess, Publisher, wait_until

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "occupied": st.booleans() | json_values,
        "ts": st.integers(min_value=-(2**63), max_value=2**63)
        | st.sampled_from(
            [
                NOW.isoformat(),
                (NOW - timedelta(days=9)).isoformat(),
                "2026-11-24T08:00:00",
                (NOW + timedelta(hours=1)).isoformat(),
                "yesterday",
            ]
        ),
        "battery_v": st.floats(allow_nan=False) | json_values,
        "active_power_kw": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "energy_kwh": st.floats(min_value=-10, max_value=1e12) | json_values,
        "bins": st.lists(
            st.fixed_dictionaries(
                {
                    "category": st.sampled_from(["wet", "dry", "recyclable", "hazardous", "metal"]),
                    "fill_pct": st.floats(min_value=-10, max_value=120),
                },
                optional={"weight_kg": st.floats(min_value=-1, max_value=3000)},
            ),
            max_size=10,
        ),
        "gas": json_values | st.fixed_dictionaries({"h2s_ppm": st.floats(-1, 2000)}),
        "type": st.text(max_size=40),
        "id": st.text(max_size=10),
        "seq": st.integers(min_value=-5, max_value=2**64),
    },
)
payloads = (
    fields.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode())
)
levels = st.sampled_from(["parking", "waste", "energy", "water", "", "+"])
# MQTT forbids control characters in topics (MQTT 5 §1.5.4); the broker drops a
# client that sends them, so the fuzz stays within what a broker lets through.
device_ids = st.sampled_from(["pk-1", "ws-1", "em-1", "bad id", "x" * 70, "a/b"]) | st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Cn", "Co")), max_size=6
)
channels = st.sampled_from(["telemetry", "status", "event", "config"])


@st.composite
def topics(draw: Any, prefix: str = "city") -> str:
    return f"{prefix}/{draw(levels)}/{draw(device_ids)}/{draw(channels)}"


@given(topic=topics(), payload=payloads)
@settings(max_examples=400, deadline=None)
def test_any_message_parses_to_a_value_never_an_exception(topic: str, payload: bytes) -> None:
    result = parse_message(topic, payload, NOW, prefix="city", limits=Limits())
    assert isinstance(result, Reading | DeviceStatus | Event | Rejection)
    if isinstance(result, Rejection):
        assert result.detail


def test_fuzzed_messages_through_the_pipeline_are_each_stored_or_dead_lettered(
    collector_factory: Factory,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    publisher: Publisher,
) -> None:
    collector = collector_factory(database_url, mqtt_url, topic_prefix)
    collector.start_and_wait()
    sent = 0

    # Topics with wildcards or empty levels cannot be published; keep the rest.
    safe_topics = topics(topic_prefix).filter(
        lambda t: (
            "+" not in t
            and "#" not in t
            and "//" not in t
            and not t.endswith("/")
            and "\x00" not in t
        )
    )

    @given(st.lists(st.tuples(safe_topics, payloads), min_size=1, max_size=25))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def run(batch: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        publisher.publish_all(batch)
        sent += len(batch)
        wait_until(
            lambda: _metric(collector, "messages_received_total") == sent,
            30,
            f"{sent} messages handled",
        )

    run()
    m = collector.metrics()
    stored = _sum(m, "cityvitals_collector_readings_stored_total")
    dups = _sum(m, "cityvitals_collector_duplicates_total")
    rejected = _sum(m, "cityvitals_collector_rejected_total")
    assert sent == stored + dups + rejected
    with psycopg.connect(database_url) as conn:
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM readings_parking) + (SELECT count(*) FROM "
            "readings_waste) + (SELECT count(*) FROM readings_energy) + (SELECT count(*) "
            "FROM events)"
        ).fetchone()
    assert dead == (rejected,)
    assert rows == (stored - m['cityvitals_collector_readings_stored_total{kind="status"}'],)


def _metric(c: CollectorProcess, name: str) -> float:
    return c.metrics().get(f"cityvitals_collector_{name}", 0.0)


def _sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix))
