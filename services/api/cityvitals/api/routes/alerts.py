"""`/v1/alerts`: per-site and per-device threshold crossings, active and cleared."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from psycopg import sql
from psycopg.rows import dict_row

from cityvitals.api.deps import PoolDep
from cityvitals.api.models import DISTRICT_PATTERN, AlertList

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@router.get("", response_model=AlertList, summary="Alerts, newest first")
async def list_alerts(
    pool: PoolDep,
    state: Literal["active", "cleared", "all"] = "active",
    district: Annotated[
        str | None,
        Query(pattern=DISTRICT_PATTERN[:-2] + "|unassigned)$", description="or `unassigned`"),
    ] = None,
    severity: Literal["attention", "warning", "critical"] | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """Active alerts by default; `state=cleared` for history, `all` for both."""
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
    query = sql.SQL(
        "SELECT id, indicator, entity, district, severity, value, threshold, state, "
        "opened_at, updated_at, cleared_at FROM alerts WHERE {} "
        "ORDER BY opened_at DESC, id DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(where))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return {"items": await cur.fetchall()}
