"""The registry as the API shows it: each device with its liveness; writes through the
registry library (`cityvitals.registry`), so that the API, the CLI and the simulator
validate and refuse alike."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cityvitals.api.queries import ONLINE_SQL, base_params
from cityvitals.registry import service as registry
from cityvitals.registry.models import DEFAULT_OPENING_HOURS, DeviceIn, ImportReport
from cityvitals.registry.parse import Format

_SELECT = sql.SQL(
    "SELECT d.device_id, d.kind, d.district, d.site, d.name, d.lat, d.lon, "
    "d.report_interval_s, d.opening_hours, d.key_consumer, d.contract_kw, d.auto_registered, "
    "d.created_at, d.updated_at, s.last_seen_at AS last_seen, {online} AS online, "
    "CASE WHEN s.status_online IS NULL THEN NULL WHEN s.status_online THEN 'online' "
    "ELSE 'offline' END AS retained_status "
    "FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id"
).format(online=ONLINE_SQL)
_ONE = sql.SQL("{select} WHERE d.device_id = %(device_id)s").format(select=_SELECT)
_PAGE = sql.SQL("{select} WHERE {where} ORDER BY d.device_id LIMIT %(limit)s")


@dataclass(frozen=True, slots=True)
class Registered:
    """A `PUT`'s outcome: the entry as stored, or a refused kind change."""

    device: dict[str, Any] | None
    created: bool = False

    @property
    def conflict(self) -> bool:
        """The device is registered with another kind."""
        return self.device is None


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row as the API shows it (waste huts get their default opening hours)."""
    out = dict(row)
    if out["kind"] == "waste" and out["opening_hours"] is None:
        out["opening_hours"] = [{"open": o, "close": c} for o, c in DEFAULT_OPENING_HOURS]
    return out


async def _get(conn: AsyncConnection[Any], device_id: str, now: datetime) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ONE, base_params(now) | {"device_id": device_id})
        row = await cur.fetchone()
    return _shown(row) if row else None


async def get_device(
    pool: AsyncConnectionPool[Any], *, device_id: str, now: datetime
) -> dict[str, Any] | None:
    """One device with its liveness, or None."""
    async with pool.connection() as conn:
        return await _get(conn, device_id, now)


async def list_devices(
    pool: AsyncConnectionPool[Any],
    *,
    now: datetime,
    kind: str | None,
    district: str | None,
    online: bool | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """A page of devices in id order after `cursor`, and the cursor of the next page.

    The cursor is the last device id of the previous page: keyset pagination.
    """
    where: list[sql.Composable] = [sql.SQL("true")]
    # One more than asked: whether another page follows.
    params = base_params(now) | {"limit": limit + 1}
    if kind is not None:
        where.append(sql.SQL("d.kind = %(kind)s"))
        params["kind"] = kind
    if district == "unassigned":
        where.append(sql.SQL("d.district IS NULL"))
    elif district is not None:
        where.append(sql.SQL("d.district = %(district)s"))
        params["district"] = district
    if online is not None:
        where.append(sql.SQL("({}) = %(online)s").format(ONLINE_SQL))
        params["online"] = online
    if cursor:
        where.append(sql.SQL("d.device_id > %(after)s"))
        params["after"] = cursor
    query = _PAGE.format(select=_SELECT, where=sql.SQL(" AND ").join(where))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = [_shown(r) for r in await cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": rows[-1]["device_id"] if more and rows else None}


async def register_device(
    pool: AsyncConnectionPool[Any], *, device_id: str, device: DeviceIn, now: datetime
) -> Registered:
    """Create or replace a registry entry; the entry with its liveness, or a conflict."""
    async with pool.connection() as conn:
        async with conn.transaction():
            result = await registry.upsert_device(conn, device_id=device_id, device=device, now=now)
        if result.conflict:
            return Registered(device=None)
        return Registered(device=await _get(conn, device_id, now), created=result.created)


async def delete_device(pool: AsyncConnectionPool[Any], *, device_id: str) -> bool:
    """Remove a registry entry; whether there was one."""
    async with pool.connection() as conn:
        return await registry.delete_device(conn, device_id=device_id)


async def import_devices(
    pool: AsyncConnectionPool[Any], *, body: AsyncIterable[bytes], fmt: Format, now: datetime
) -> ImportReport:
    """Stream a CSV or JSON body into the registry; ValueError when it is unreadable."""
    async with pool.connection() as conn:
        return await registry.import_stream(conn, body, fmt=fmt, now=now)
