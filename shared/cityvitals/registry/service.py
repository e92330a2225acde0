"""Writing the registry: one device, or a whole file through COPY (API, CLI, simulator).

An import reads the file in pieces and checks each row on a worker thread. Checked
rows go, a batch at a time, by COPY into a temporary table, and one statement per
batch registers them with `INSERT … SELECT … ON CONFLICT`; while the database
registers one batch, the next is being checked, so the two processors of a small
machine both work. Everything happens in one transaction: a file that turns out to
be unreadable halfway stores nothing.

The first row naming a device is the one that counts; a later row naming it again is
reported as a duplicate of that row, and a row that would change a registered
device's kind is refused (delete the device first). Within a batch the statement
sees both; across batches, a device this import already wrote is one whose row
version belongs to this transaction (`xmin`), and the few ids refused for their kind
are remembered here. Memory holds a batch and the failures, whatever the file's size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.pq import TransactionStatus

from cityvitals.db.schema import REGISTRY_FIELDS
from cityvitals.registry.models import DeviceIn, ImportFailure, ImportReport
from cityvitals.registry.parse import (
    STAGING_COLUMNS,
    Checked,
    CopyRow,
    Format,
    RawRow,
    Reader,
    check_all,
    reader_for,
    records,
    registry_values,
)

# Network pieces are gathered to this size before a worker thread checks them: big
# enough that a thread hop per piece costs nothing, small enough to bound memory.
PIECE_BYTES = 1 << 20
# Rows checked per worker-thread step when a whole document arrives at once (JSON).
ROWS_PER_STEP = 20_000
# Rows registered per statement: enough that a statement's fixed cost vanishes, few
# enough that a batch in memory stays small and the last one, which nothing
# overlaps, is short.
BATCH_ROWS = 50_000
# A batch's sort by device id then stays in memory.
BATCH_WORK_MEM = "64MB"
# Rows written to a COPY between two turns of the event loop, so that a server
# importing a file keeps answering other requests meanwhile.
ROWS_PER_TURN = 5_000
KIND_CHANGE = "kind: the device is registered with another kind"
_ID = STAGING_COLUMNS.index("device_id")

_BATCH = sql.Identifier("registry_import")
_LOG = sql.Identifier("registry_import_log")
_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, REGISTRY_FIELDS))
_REPLACE = sql.SQL(", ").join(
    sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name))
    for name in REGISTRY_FIELDS
    if name not in ("device_id", "kind")
)
# Registering replaces every field but the kind, and makes an auto-registered device
# registered; the WHERE refuses a kind change (no row comes back for it).
_ON_CONFLICT = sql.SQL(
    "ON CONFLICT (device_id) DO UPDATE SET {replace}, auto_registered = false, "
    "updated_at = excluded.updated_at WHERE devices.kind = excluded.kind"
).format(replace=_REPLACE)
_UPSERT_ONE = sql.SQL(
    "INSERT INTO devices ({columns}, auto_registered, created_at, updated_at) "
    "VALUES ({values}, false, %(now)s, %(now)s) {on_conflict} RETURNING (xmax = 0) AS created"
).format(
    columns=_COLUMNS,
    values=sql.SQL(", ").join(map(sql.Placeholder, REGISTRY_FIELDS)),
    on_conflict=_ON_CONFLICT,
)
# The device's live state goes with its entry (its history stays): a removed device
# that speaks again is heard for the first time, and registered as `unassigned`.
_DELETE = sql.SQL(
    "WITH gone AS (DELETE FROM devices WHERE device_id = %(device_id)s RETURNING device_id), "
    "state AS (DELETE FROM device_state WHERE device_id IN (SELECT device_id FROM gone)) "
    "SELECT count(*) FROM gone"
)
_SET_LOCAL = sql.SQL("SELECT set_config(%(name)s, %(value)s, true)")
# The batch table takes the registry's column types, and none of its constraints.
_CREATE_BATCH = sql.SQL(
    "CREATE TEMPORARY TABLE {batch} ON COMMIT DROP AS "
    "SELECT 0::integer AS row_no, {columns} FROM devices WITH NO DATA"
).format(batch=_BATCH, columns=_COLUMNS)
# Each device's first row, kept to name it when a later batch repeats the device.
_CREATE_LOG = sql.SQL(
    "CREATE TEMPORARY TABLE {log} (device_id text NOT NULL, row_no integer NOT NULL) ON COMMIT DROP"
).format(log=_LOG)
_TRUNCATE_BATCH = sql.SQL("TRUNCATE {batch}").format(batch=_BATCH)
# Binary: a third of the client's time per row that text takes (floats unformatted).
_COPY_BATCH = sql.SQL("COPY {batch} ({columns}) FROM STDIN (FORMAT BINARY)").format(
    batch=_BATCH, columns=sql.SQL(", ").join(map(sql.Identifier, STAGING_COLUMNS))
)
# Binary COPY needs each column's type: the batch table's own, in column order.
_BATCH_TYPES = sql.SQL(
    "SELECT atttypid FROM pg_attribute WHERE attrelid = %(table)s::regclass "
    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)
_OURS = sql.SQL("pg_current_xact_id()::xid")
# One batch: each device's first row is registered unless an earlier batch of this
# import wrote the device (its row version is this transaction's) or the kind would
# change. Comes back: later rows of a device within the batch (`duplicate`, with the
# first row), and first rows left out, told apart by the device as it stood before
# the statement (`earlier` when this import wrote it, else `kind`).
_REGISTER_BATCH = sql.SQL(
    "WITH ranked AS MATERIALIZED ("
    " SELECT *, row_number() OVER w AS nth, first_value(row_no) OVER w AS first_row"
    " FROM {batch} WINDOW w AS (PARTITION BY device_id ORDER BY row_no)"
    "), stored AS ("
    " INSERT INTO devices ({columns}, auto_registered, created_at, updated_at)"
    " SELECT {columns}, false, %(now)s, %(now)s FROM ranked WHERE nth = 1"
    " ON CONFLICT (device_id) DO UPDATE SET {replace}, auto_registered = false,"
    " updated_at = excluded.updated_at"
    " WHERE devices.kind = excluded.kind AND devices.xmin <> {ours}"
    " RETURNING device_id"
    "), logged AS ("
    " INSERT INTO {log} (device_id, row_no) SELECT device_id, row_no FROM ranked WHERE nth = 1"
    ") "
    "SELECT row_no, device_id, first_row, 'duplicate' FROM ranked WHERE nth > 1 "
    "UNION ALL "
    "SELECT r.row_no, r.device_id, NULL, "
    "CASE WHEN d.xmin = {ours} THEN 'earlier' ELSE 'kind' END FROM ranked r "
    "LEFT JOIN devices d ON d.device_id = r.device_id WHERE r.nth = 1 "
    "AND NOT EXISTS (SELECT 1 FROM stored s WHERE s.device_id = r.device_id)"
).format(batch=_BATCH, log=_LOG, columns=_COLUMNS, replace=_REPLACE, ours=_OURS)
_FIRST_ROWS = sql.SQL(
    "SELECT device_id, min(row_no) FROM {log} WHERE device_id = ANY(%(ids)s) GROUP BY 1"
).format(log=_LOG)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Whether a device was created, updated, or refused for a kind change."""

    created: bool = False
    conflict: bool = False


async def upsert_device(
    conn: AsyncConnection[Any], *, device_id: str, device: DeviceIn, now: datetime
) -> UpsertResult:
    """Create or replace one registry entry; a kind change is refused (`conflict`)."""
    params = dict(zip(REGISTRY_FIELDS, registry_values(device), strict=True))
    params |= {"device_id": device_id, "now": now}
    async with conn.cursor() as cur:
        await cur.execute(_UPSERT_ONE, params)
        row = await cur.fetchone()
    if row is None:
        return UpsertResult(conflict=True)
    return UpsertResult(created=bool(row[0]))


async def delete_device(conn: AsyncConnection[Any], *, device_id: str) -> bool:
    """Remove a registry entry and its live state (its history stays); whether there was one."""
    cur = await conn.execute(_DELETE, {"device_id": device_id})
    row = await cur.fetchone()
    return bool(row and row[0])


async def import_stream(
    conn: AsyncConnection[Any],
    chunks: AsyncIterable[bytes],
    *,
    fmt: Format,
    now: datetime,
) -> ImportReport:
    """Import a CSV or JSON file arriving in pieces; ValueError when it is unreadable.

    `conn` must not be in a transaction: the import is one of its own. Each of its
    statements handles one batch, so a server's statement timeout still applies.
    """
    return await _store(conn, _checked(reader_for(fmt), chunks), now=now)


async def import_records(
    conn: AsyncConnection[Any], items: Iterable[Mapping[str, Any]], *, now: datetime
) -> ImportReport:
    """Import device objects already in memory (rows numbered from 1)."""
    return await _store(conn, _steps(records(items)), now=now)


def _piece(reader: Reader, data: bytes) -> Checked:
    return check_all(reader.feed(data))


def _last(reader: Reader, data: bytes) -> list[RawRow]:
    return reader.feed(data) + reader.close()


async def _checked(reader: Reader, chunks: AsyncIterable[bytes]) -> AsyncIterator[Checked]:
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        if len(pending) >= PIECE_BYTES:
            data = bytes(pending)
            pending.clear()
            yield await asyncio.to_thread(_piece, reader, data)
    rest = await asyncio.to_thread(_last, reader, bytes(pending))
    async for piece in _steps(rest):
        yield piece


async def _steps(rows: list[RawRow]) -> AsyncIterator[Checked]:
    for start in range(0, len(rows), ROWS_PER_STEP):
        yield await asyncio.to_thread(check_all, rows[start : start + ROWS_PER_STEP])


async def _batches(pieces: AsyncIterable[Checked]) -> AsyncGenerator[Checked, None]:
    batch = Checked()
    async for piece in pieces:
        batch.rows += piece.rows
        batch.failed += piece.failed
        if len(batch.rows) >= BATCH_ROWS:
            yield batch
            batch = Checked()
    if batch.rows or batch.failed:
        yield batch


@dataclass
class _Import:
    """What an import has found so far."""

    imported: int = 0
    failed: list[ImportFailure] = field(default_factory=list)
    # Devices refused for their kind, by id: the row that named each first.
    refused: dict[str, int] = field(default_factory=dict)
    # Rows repeating a device an earlier batch registered: (row, device id).
    repeats: list[tuple[int, str]] = field(default_factory=list)

    def fail(self, row: int, device_id: str, error: str) -> None:
        """Report one row."""
        self.failed.append(ImportFailure(row=row, device_id=device_id, errors=[error]))

    def fresh(self, rows: list[CopyRow]) -> list[CopyRow]:
        """The rows to stage: those naming a device refused earlier are duplicates."""
        if not self.refused:
            return rows
        out = []
        for row in rows:
            first = self.refused.get(row[_ID])
            if first is None:
                out.append(row)
            else:
                self.fail(row[0], row[_ID], f"device_id: duplicate of row {first}")
        return out


async def _store(
    conn: AsyncConnection[Any],
    pieces: AsyncIterable[Checked],
    *,
    now: datetime,
) -> ImportReport:
    # A savepoint's row versions carry a subtransaction's id: `xmin` would not
    # recognise what the import wrote.
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("a registry import needs a connection outside a transaction")
    state = _Import()
    batches = _batches(pieces)
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_SET_LOCAL, {"name": "work_mem", "value": BATCH_WORK_MEM})
        await cur.execute(_CREATE_BATCH)
        await cur.execute(_CREATE_LOG)
        await cur.execute(_BATCH_TYPES, {"table": _BATCH.as_string()})
        types = [oid for (oid,) in await cur.fetchall()]
        upcoming = asyncio.ensure_future(anext(batches, None))
        try:
            while (batch := await upcoming) is not None:
                # The next batch is checked while this one is copied and registered.
                upcoming = asyncio.ensure_future(anext(batches, None))
                rows = await _stage(cur, batch, types, state)
                await _register(cur, rows, state, now)
        finally:
            if not upcoming.done():
                # Registering stopped early: the batch being checked is not wanted.
                upcoming.cancel()
                await asyncio.wait({upcoming})
                if not upcoming.cancelled():
                    upcoming.exception()
            await batches.aclose()
        if state.repeats:
            await cur.execute(_FIRST_ROWS, {"ids": [d for _, d in state.repeats]})
            first = dict(await cur.fetchall())
            for row, device_id in state.repeats:
                state.fail(row, device_id, f"device_id: duplicate of row {first[device_id]}")
    state.failed.sort(key=lambda f: f.row)
    return ImportReport(imported=state.imported, failed=state.failed)


async def _stage(
    cur: AsyncCursor[Any], batch: Checked, types: list[int], state: _Import
) -> list[CopyRow]:
    """Copy a batch's rows into the batch table; the rows copied."""
    state.failed += batch.failed
    rows = state.fresh(batch.rows)
    await cur.execute(_TRUNCATE_BATCH)
    async with cur.copy(_COPY_BATCH) as copy:
        copy.set_types(types)
        for n, row in enumerate(rows, start=1):
            await copy.write_row(row)
            if n % ROWS_PER_TURN == 0:
                await asyncio.sleep(0)
    return rows


async def _register(
    cur: AsyncCursor[Any], rows: list[CopyRow], state: _Import, now: datetime
) -> None:
    """Register the copied batch; report its rows that were left out."""
    if not rows:
        return
    await cur.execute(_REGISTER_BATCH, {"now": now})
    left_out = await cur.fetchall()
    earlier = {device_id for _, device_id, _, why in left_out if why == "earlier"}
    for row_no, device_id, first_row, why in left_out:
        if device_id in earlier:
            # Repeats a device an earlier batch registered: named at the end.
            state.repeats.append((row_no, device_id))
        elif why == "duplicate":
            state.fail(row_no, device_id, f"device_id: duplicate of row {first_row}")
        else:
            state.refused[device_id] = row_no
            state.fail(row_no, device_id, KIND_CHANGE)
    state.imported += len(rows) - len(left_out)
