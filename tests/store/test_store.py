"""The write path against a real PostgreSQL: aggregates the API reads, in one transaction."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cityvitals.payloads import Limits
from cityvitals.registry.service import delete_device
from cityvitals.store import BatchWriter, Incoming

P = "city"
# 2026-11-24 15:59:00 UTC is 23:59 in Shanghai: one minute before local midnight.
BEFORE_MIDNIGHT = datetime(2026, 11, 24, 15, 59, tzinfo=UTC)
NOW = BEFORE_MIDNIGHT + timedelta(hours=2)


@pytest.fixture
def writer() -> BatchWriter:
    return BatchWriter(prefix=P, limits=Limits(), local_tz="Asia/Shanghai", collector="test")


def _msg(topic: str, body: dict[str, object], at: datetime = NOW) -> Incoming:
    return Incoming(f"{P}/{topic}", json.dumps(body).encode(), at)


def _energy(device: str, ts: datetime, kwh: float) -> Incoming:
    return _msg(
        f"energy/{device}/telemetry",
        {"ts": ts.isoformat(), "active_power_kw": 10.0, "energy_kwh": kwh},
    )


def test_energy_consumption_per_local_day_handles_midnight_reset_and_late_readings(
    writer: BatchWriter, database_url: str
) -> None:
    t = BEFORE_MIDNIGHT
    with psycopg.connect(database_url) as conn:
        writer.write(
            conn, [_energy("em-1", t - timedelta(minutes=1), 100.0), _energy("em-1", t, 105.0)]
        )
        # After local midnight: 110 is the day's first reading, so the 105 -> 110 step
        # belongs to no day's "latest - first"; then +5, a reset to 2, and +3.
        writer.write(
            conn,
            [
                _energy("em-1", t + timedelta(minutes=2), 110.0),
                _energy("em-1", t + timedelta(minutes=3), 115.0),
            ],
        )
        writer.write(
            conn,
            [
                _energy("em-1", t + timedelta(minutes=4), 2.0),
                _energy("em-1", t + timedelta(minutes=5), 5.0),
            ],
        )
        # A late reading counts as if it had arrived in order: 107 at 00:00:30 becomes
        # the day's first reading, so 107 -> 110 adds 3.
        writer.write(conn, [_energy("em-1", t + timedelta(minutes=1, seconds=30), 107.0)])
        days = conn.execute(
            "SELECT day::text, consumption_kwh FROM energy_daily ORDER BY day"
        ).fetchall()
        latest = conn.execute("SELECT energy_kwh FROM latest_energy").fetchone()
        stored = conn.execute("SELECT count(*) FROM readings_energy").fetchone()
    assert days == [("2026-11-24", 5.0), ("2026-11-25", 3.0 + 5.0 + 2.0 + 3.0)]
    assert latest == (5.0,)
    assert stored == (7,)


def test_waste_deposits_count_positive_weight_increases_per_bin_by_category(
    writer: BatchWriter, database_url: str
) -> None:
    def hut(minute: int, wet: float, dry: float) -> Incoming:
        return _msg(
            "waste/ws-1/telemetry",
            {
                "ts": (NOW - timedelta(minutes=60 - minute)).isoformat(),
                "bins": [
                    {"category": "wet", "fill_pct": 10, "weight_kg": wet},
                    {"category": "dry", "fill_pct": 10, "weight_kg": dry},
                ],
            },
        )

    with psycopg.connect(database_url) as conn:
        writer.write(conn, [hut(0, 10, 5), hut(5, 14, 5)])
        writer.write(conn, [hut(10, 3, 9), hut(15, 4.5, 9)])  # wet emptied by collection
        rows = conn.execute(
            "SELECT category, deposited_kg FROM waste_daily ORDER BY category"
        ).fetchall()
    assert rows == [("dry", 4.0), ("wet", 4.0 + 1.5)]


def test_parking_transitions_and_seq_gaps_are_counted_once(
    writer: BatchWriter, database_url: str
) -> None:
    def space(minute: int, occupied: bool, seq: int) -> Incoming:
        return _msg(
            "parking/pk-1/telemetry",
            {
                "ts": (NOW - timedelta(minutes=30 - minute)).isoformat(),
                "occupied": occupied,
                "seq": seq,
            },
        )

    batch = [space(0, False, 1), space(1, True, 2), space(2, False, 3), space(3, True, 5)]
    with psycopg.connect(database_url) as conn:
        writer.write(conn, batch)
        result = writer.write(conn, batch)  # a re-delivery of the whole batch
        transitions = conn.execute("SELECT sum(transitions) FROM parking_hourly").fetchone()
        seq = conn.execute("SELECT min(min_seq), max(max_seq), sum(n) FROM seq_10m").fetchone()
    assert result.duplicates["parking"] == 4
    assert transitions == (2,)
    assert seq == (1, 5, 4)  # 4 received of 5 expected


def test_status_offline_then_reading_keeps_both_times(
    writer: BatchWriter, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        writer.write(conn, [Incoming(f"{P}/parking/pk-2/status", b"offline", NOW)])
        writer.write(
            conn, [_msg("parking/pk-2/telemetry", {"occupied": True}, NOW + timedelta(seconds=5))]
        )
        # An older status arriving late does not overwrite a newer one.
        writer.write(
            conn, [Incoming(f"{P}/parking/pk-2/status", b"online", NOW - timedelta(minutes=1))]
        )
        row = conn.execute(
            "SELECT status_online, status_at, last_seen_at FROM device_state"
        ).fetchone()
    assert row == (False, NOW, NOW + timedelta(seconds=5))


def test_ingest_counters_add_up_per_minute(writer: BatchWriter, database_url: str) -> None:
    batch = [
        _energy("em-1", NOW - timedelta(seconds=1), 1.0),
        _energy("em-1", NOW - timedelta(seconds=1), 1.0),
        Incoming(f"{P}/energy/em-1/telemetry", b"not json", NOW),
    ]
    with psycopg.connect(database_url) as conn:
        result = writer.write(conn, batch)
        row = conn.execute(
            "SELECT received, stored, duplicates, rejected, "
            "(SELECT sum(x) FROM unnest(lag_counts) x) FROM ingest_minutely"
        ).fetchone()
    assert (
        result.received,
        sum(result.stored.values()),
        sum(result.duplicates.values()),
        sum(result.rejected.values()),
    ) == (3, 1, 1, 1)
    assert row == (3, 1, 1, 1, 1)


def test_a_device_removed_from_the_registry_is_registered_again_when_it_speaks(
    writer: BatchWriter, database_url: str
) -> None:
    def registry(conn: psycopg.Connection) -> list[tuple[object, ...]]:
        return conn.execute("SELECT device_id, auto_registered FROM devices").fetchall()

    async def remove() -> bool:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as a:
            return await delete_device(a, device_id="em-9")

    with psycopg.connect(database_url) as conn:
        first = writer.write(conn, [_energy("em-9", NOW - timedelta(minutes=3), 1.0)])
        again = writer.write(conn, [_energy("em-9", NOW - timedelta(minutes=2), 2.0)])
        assert (first.autoregistered, again.autoregistered) == (1, 0)
        assert registry(conn) == [("em-9", True)]
    assert asyncio.run(remove())
    with psycopg.connect(database_url) as conn:
        assert registry(conn) == []
        assert conn.execute("SELECT count(*) FROM device_state").fetchone() == (0,)
        back = writer.write(conn, [_energy("em-9", NOW - timedelta(minutes=1), 3.0)])
        assert back.autoregistered == 1
        assert registry(conn) == [("em-9", True)]
        # Its history stayed through the removal.
        assert conn.execute("SELECT count(*) FROM readings_energy").fetchone() == (3,)
