"""Registry imports through the real database: streamed in batches, rows reported."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from cityvitals.registry import service
from cityvitals.registry.models import DeviceIn, ImportReport
from cityvitals.registry.parse import Format
from scripts.make_registry_csv import write

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def import_bytes(
    database_url: str, data: bytes, *, fmt: Format = "csv", piece: int = 65536
) -> ImportReport:
    """Stream `data` into the registry in pieces of `piece` bytes."""

    async def run() -> ImportReport:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await service.import_stream(conn, _pieces(data, piece), fmt=fmt, now=NOW)

    return asyncio.run(run())


def import_items(database_url: str, items: Iterable[Mapping[str, Any]]) -> ImportReport:
    """Import device objects already in memory."""

    async def run() -> ImportReport:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await service.import_records(conn, items, now=NOW)

    return asyncio.run(run())


def errors(report: ImportReport) -> dict[int, str]:
    """Each failed row's first error."""
    return {f.row: f.errors[0] for f in report.failed}


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a few rows, so that a short file fed in pieces of 16 bytes crosses many."""
    monkeypatch.setattr(service, "BATCH_ROWS", 3)
    monkeypatch.setattr(service, "PIECE_BYTES", 16)


def test_fifty_thousand_devices_stream_in_and_every_bad_row_is_reported(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches and pieces well below the file's size: the file crosses many of each.
    monkeypatch.setattr(service, "BATCH_ROWS", 4000)
    monkeypatch.setattr(service, "PIECE_BYTES", 1 << 16)
    out = io.StringIO()
    written = write(out, 50_000, bad_rate=0.01, seed=3)
    data = out.getvalue().encode()
    tracemalloc.start()
    try:
        report = import_bytes(database_url, data, piece=8192)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.imported == written.good
    assert len(report.failed) == sum(written.bad.values()) > 0
    assert [f.row for f in report.failed] == sorted(f.row for f in report.failed)
    by_field = Counter(f.errors[0].split(":")[0] for f in report.failed)
    assert by_field["device_id"] == written.bad["duplicate"] + written.bad["no_id"]
    assert by_field["district"] == written.bad["district"]
    assert by_field["lat"] == written.bad["lat"]
    assert by_field["kind"] == written.bad["kind"]
    duplicate = next(f for f in report.failed if "duplicate" in f.errors[0])
    assert duplicate.errors == ["device_id: duplicate of row 1"]
    with psycopg.connect(database_url) as conn:
        counts: dict[str, int] = dict(
            conn.execute("SELECT kind, count(*) FROM devices GROUP BY kind").fetchall()
        )
    assert sum(counts.values()) == written.good
    assert counts["parking"] > counts["energy"] > counts["waste"] > 0
    # Batches of 4,000 rows, not the file: holding all 50,000 rows would take far more.
    assert peak < 12 * 1024 * 1024, peak


def test_a_kind_change_is_refused_and_the_device_keeps_its_kind(
    database_url: str, small_batches: None
) -> None:
    import_items(database_url, [{"device_id": "m-1", "kind": "energy", "contract_kw": 800}])
    data = (
        b"device_id,kind,site\n"
        b"p-1,parking,Lot 1\n"
        b"m-1,parking,Lot 1\n"  # row 2: energy already
        b"p-2,parking,Lot 1\n"
        b"p-3,parking,Lot 1\n"
        b"m-1,energy,Tower\n"  # row 5, a later batch: a duplicate of row 2
    )
    report = import_bytes(database_url, data, piece=16)
    assert report.imported == 3
    assert errors(report) == {
        2: service.KIND_CHANGE,
        5: "device_id: duplicate of row 2",
    }
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT kind, contract_kw, site FROM devices WHERE device_id = 'm-1'"
        ).fetchone()
    assert row == ("energy", 800.0, None)


def test_a_device_named_again_in_a_later_batch_is_a_duplicate_of_its_first_row(
    database_url: str, small_batches: None
) -> None:
    data = (
        b"device_id,kind,site\n"
        b"p-1,parking,first\n"
        b"p-2,parking,x\n"
        b"p-1,parking,same batch\n"
        b"p-3,parking,x\n"
        b"p-4,parking,x\n"
        b"p-1,parking,next batch\n"
        b"p-5,parking,x\n"
        b"p-1,parking,\n"
        b"p-1,waste,\n"
    )
    report = import_bytes(database_url, data, piece=16)
    assert report.imported == 5
    assert errors(report) == dict.fromkeys((3, 6, 8, 9), "device_id: duplicate of row 1")
    with psycopg.connect(database_url) as conn:
        site = conn.execute("SELECT site FROM devices WHERE device_id = 'p-1'").fetchone()
    assert site == ("first",)


def test_a_file_unreadable_after_some_batches_stores_nothing(
    database_url: str, small_batches: None
) -> None:
    good = b"".join(b"p-%d,parking\n" % i for i in range(20))
    with pytest.raises(UnicodeDecodeError):
        import_bytes(database_url, b"device_id,kind\n" + good + b"p-\xff,parking\n", piece=16)
    with pytest.raises(ValueError, match="unexpected end of data"):
        import_bytes(database_url, b'[{"device_id": "p-1", "kind": "parking"}', fmt="json")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (0,)


def test_registering_replaces_the_entry_and_an_auto_registered_device_becomes_registered(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, site, auto_registered) "
            "VALUES ('w-1', 'waste', 'old', true)"
        )
    report = import_items(
        database_url,
        [{"device_id": "w-1", "kind": "waste", "opening_hours": [["06:00", "08:00"]]}],
    )
    assert (report.imported, report.failed) == (1, [])
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT site, opening_hours, auto_registered, updated_at FROM devices"
        ).fetchone()
    # Opening hours are stored in one form, however they came.
    assert row == (None, [{"open": "06:00", "close": "08:00"}], False, NOW)


def test_json_imports_report_rows_that_are_not_devices(database_url: str) -> None:
    data = b'{"devices": [{"device_id": "e-1", "kind": "energy"}, 3, {"kind": "energy"}]}'
    report = import_bytes(database_url, data, fmt="json", piece=5)
    assert report.imported == 1
    assert [f.row for f in report.failed] == [2, 3]
    assert report.failed[1].errors == ["device_id: required"]


def test_one_device_is_upserted_and_a_kind_change_refused(database_url: str) -> None:
    async def run() -> tuple[list[service.UpsertResult], list[bool]]:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            upserts = [
                await service.upsert_device(
                    conn, device_id="p-1", device=DeviceIn(kind=kind), now=NOW
                )
                for kind in ("parking", "parking", "energy")
            ]
            deletes = [await service.delete_device(conn, device_id="p-1") for _ in range(2)]
            return upserts, deletes

    upserts, deletes = asyncio.run(run())
    assert upserts == [
        service.UpsertResult(created=True),
        service.UpsertResult(created=False),
        service.UpsertResult(conflict=True),
    ]
    assert deletes == [True, False]


def test_an_import_refuses_a_connection_already_in_a_transaction(database_url: str) -> None:
    async def run() -> None:
        async with await AsyncConnection.connect(database_url) as conn:
            await conn.execute("SELECT 1")
            await service.import_records(conn, [], now=NOW)

    with pytest.raises(RuntimeError, match="outside a transaction"):
        asyncio.run(run())
