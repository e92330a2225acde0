"""Alerts, as stored by the snapshot engine (docs/indicators.md)."""

from __future__ import annotations

from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

_LIST = sql.SQL(
    "SELECT id, indicator, entity, district, severity, value, threshold, state, "
    "opened_at, updated_at, cleared_at FROM alerts WHERE {where} "
    "ORDER BY opened_at DESC, id DESC LIMIT %(limit)s"
)


async def list_alerts(
    pool: AsyncConnectionPool[Any],
    *,
    state: Literal["active", "cleared", "all"],
    district: str | None,
    severity: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Alerts newest first; `district="unassigned"` for those of devices without one."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": limit}
    if state != "all":
        where.append(sql.SQL("state = %(state)s"))
        params["state"] = state
    if district == "unassigned":
        where.append(sql.SQL("district IS NULL"))
    elif district is not None:
        where.append(sql.SQL("district = %(district)s"))
        params["district"] = district
    if severity is not None:
        where.append(sql.SQL("severity = %(severity)s"))
        params["severity"] = severity
    query = _LIST.format(where=sql.SQL(" AND ").join(where))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows: list[dict[str, Any]] = await cur.fetchall()
    return rows
