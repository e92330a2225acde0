"""`/v1/dead-letters`: rejected messages, listable and re-playable after a fix."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg import sql
from psycopg.rows import dict_row

from cityvitals.api import replay
from cityvitals.api.deps import (
    AUTH_RESPONSES,
    DATE_TIME,
    AdminDep,
    ClockDep,
    PoolDep,
    SettingsDep,
    parse_time,
)
from cityvitals.api.models import DeadLetterList, ReplayReport
from cityvitals.reasons import Reason

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
ReasonParam = Annotated[Reason | None, Query(description="only this reason code (SPEC §2)")]


def _payload(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


@router.get("", response_model=DeadLetterList, summary="Rejected messages, newest first")
async def list_dead_letters(
    pool: PoolDep,
    reason: ReasonParam = None,
    since: Annotated[
        str | None,
        Query(description="received at or after (RFC 3339)", json_schema_extra=DATE_TIME),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Payload shown as text when it is UTF-8, else base64 (`payload_encoding`)."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": limit}
    if reason is not None:
        where.append(sql.SQL("reason = %(reason)s"))
        params["reason"] = reason.value
    if since is not None:
        where.append(sql.SQL("received_at >= %(since)s"))
        params["since"] = parse_time(since, ("query", "since"))
    query = sql.SQL(
        "SELECT id, topic, payload, reason, detail, received_at, collector, replayed_at, "
        "replay_result FROM dead_letters WHERE {} "
        "ORDER BY received_at DESC, id DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(where))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    items = []
    for r in rows:
        raw = bytes(r.pop("payload"))
        text, encoding = _payload(raw)
        items.append(r | {"payload": text, "payload_encoding": encoding, "size_bytes": len(raw)})
    return {"items": items}


@router.post(
    "/replay",
    response_model=ReplayReport,
    dependencies=[AdminDep],
    responses=AUTH_RESPONSES,
    summary="Re-validate dead letters and store what now passes (admin)",
)
async def replay_dead_letters(
    settings: SettingsDep,
    clock: ClockDep,
    reason: ReasonParam = None,
    limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
) -> ReplayReport:
    """Each dead letter not yet stored is parsed again with its original receive time."""
    return await replay.replay(settings, reason=reason, limit=limit, now=clock())
