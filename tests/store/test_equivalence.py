"""What the write path maintains batch by batch equals what `rebuild` computes from history.

Hypothesis draws readings of a few devices of each kind around local midnight — meter
registers that rise, glitch and reset, bins that fill and are emptied, spaces that
flip — and delivers them in random batches, in random order, some twice, through two
writers (two connections, two BatchWriters). Every figure the collectors maintain
(latest state, liveness, energy per local day, deposits per category, transitions per
hour, sequence counts) must then equal the same figure recomputed from the stored
readings, which is also the figure of the same readings delivered in order.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityvitals.payloads import Limits
from cityvitals.rebuild import rebuild
from cityvitals.store import BatchWriter, Incoming

TZ = "Asia/Shanghai"
# 15:30 UTC is 23:30 in Shanghai: the drawn readings straddle local midnight.
BASE = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
NOW = BASE + timedelta(hours=3)
TABLES = {
    "latest_parking": "SELECT device_id, ts, occupied, seq FROM latest_parking",
    "latest_waste": "SELECT device_id, ts, bins::text, fill_max, seq FROM latest_waste",
    "latest_energy": "SELECT device_id, ts, energy_kwh, active_power_kw FROM latest_energy",
    "device_state": "SELECT device_id, last_seen_at FROM device_state",
    "energy_daily": "SELECT device_id, day, round(consumption_kwh::numeric, 6), last_ts "
    "FROM energy_daily WHERE consumption_kwh <> 0",
    "waste_daily": "SELECT device_id, day, category, round(deposited_kg::numeric, 6) "
    "FROM waste_daily WHERE deposited_kg <> 0",
    "parking_hourly": "SELECT device_id, hour, transitions FROM parking_hourly "
    "WHERE transitions <> 0",
    "seq_10m": "SELECT device_id, bucket, min_seq, max_seq, n FROM seq_10m",
}

minutes = st.lists(st.integers(0, 120), min_size=1, max_size=12, unique=True)


@st.composite
def meter(draw: Any, device: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    kwh = draw(st.floats(0, 1000))
    for i, m in enumerate(sorted(draw(minutes))):
        step = draw(st.sampled_from(["rise", "rise", "glitch", "reset", "none"]))
        if step == "rise":
            kwh += draw(st.floats(0, 50))
        elif step == "glitch":
            kwh = max(0.0, kwh - draw(st.floats(0, 5)))
        elif step == "reset":
            kwh = draw(st.floats(0, 3))
        body: dict[str, Any] = {"active_power_kw": float(m), "seq": i}
        if step != "none":
            body["energy_kwh"] = round(kwh, 3)
        out.append((f"energy/{device}/telemetry", {**body, "_m": m}))
    return out


@st.composite
def hut(draw: Any, device: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, m in enumerate(sorted(draw(minutes))):
        bins = [
            {
                "category": draw(st.sampled_from(["wet", "dry"])),
                "fill_pct": draw(st.floats(0, 100)),
                "weight_kg": round(draw(st.floats(0, 80)), 2),
            }
            for _ in range(draw(st.integers(1, 2)))
        ]
        out.append((f"waste/{device}/telemetry", {"bins": bins, "seq": i * 2, "_m": m}))
    return out


@st.composite
def space(draw: Any, device: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"parking/{device}/telemetry", {"occupied": draw(st.booleans()), "seq": i, "_m": m})
        for i, m in enumerate(sorted(draw(minutes)))
    ]


@st.composite
def deliveries(draw: Any) -> list[list[Incoming]]:
    """Readings of a small fleet, cut into batches in a random order, some sent twice."""
    readings = [
        *draw(meter("em-1")),
        *draw(meter("em-2")),
        *draw(hut("ws-1")),
        *draw(space("pk-1")),
        *draw(space("pk-2")),
    ]
    messages = []
    for topic, body in readings:
        doc = {k: v for k, v in body.items() if k != "_m"}
        doc["ts"] = (BASE + timedelta(minutes=body["_m"])).isoformat()
        messages.append(Incoming(f"city/{topic}", json.dumps(doc).encode(), NOW))
    shuffle = draw(st.randoms(use_true_random=False))
    order = list(messages) + [m for m in messages if draw(st.integers(0, 9)) == 0]
    if draw(st.booleans()):
        shuffle.shuffle(order)
    else:
        # Mostly in order with a few late ones: the common case of a late reading.
        for _ in range(draw(st.integers(0, 3))):
            i, j = sorted(shuffle.sample(range(len(order)), 2)) if len(order) > 1 else (0, 0)
            order.insert(j, order.pop(i))
    batches, i = [], 0
    while i < len(order):
        n = draw(st.integers(1, 6))
        batches.append(order[i : i + n])
        i += n
    return batches


def _snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted(conn.execute(q).fetchall()) for name, q in TABLES.items()}


def _clear(conn: psycopg.Connection) -> None:
    conn.execute(
        "TRUNCATE readings_parking, readings_waste, readings_energy, latest_parking, "
        "latest_waste, latest_energy, device_state, devices, energy_daily, waste_daily, "
        "parking_hourly, seq_10m, ingest_minutely, events, dead_letters"
    )
    conn.commit()


def test_maintained_state_equals_the_state_rebuilt_from_history(database_url: str) -> None:
    writers = [
        BatchWriter(prefix="city", limits=Limits(), local_tz=TZ, collector=f"w{i}")
        for i in range(2)
    ]
    conns = [psycopg.connect(database_url) for _ in writers]

    @given(deliveries())
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def check(batches: list[list[Incoming]]) -> None:
        _clear(conns[0])
        pick = random.Random(len(batches))
        for batch in batches:
            k = pick.randrange(2)
            writers[k].write(conns[k], batch)
        maintained = _snapshot(conns[0])
        conns[0].commit()
        rebuild(conns[0], local_tz=TZ)
        rebuilt = _snapshot(conns[0])
        conns[0].commit()
        sent = [[(m.topic, m.payload.decode()) for m in b] for b in batches]
        for name in TABLES:
            assert maintained[name] == rebuilt[name], (name, sent)

    try:
        check()
    finally:
        for c in conns:
            c.close()
