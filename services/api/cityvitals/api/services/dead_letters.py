"""Dead letters: listed with their payloads, and replayed through the library."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cityvitals.reasons import Reason
from cityvitals.replay import ReplayReport, replay
from cityvitals.settings import LimitSettings

_LIST = sql.SQL(
    "SELECT id, topic, payload, reason, detail, received_at, collector, replayed_at, "
    "replay_result FROM dead_letters WHERE {where} "
    "ORDER BY received_at DESC, id DESC LIMIT %(limit)s"
)


def _payload(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


async def list_dead_letters(
    pool: AsyncConnectionPool[Any],
    *,
    reason: Reason | None,
    since: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first; the payload as text when it is UTF-8, else base64."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": limit}
    if reason is not None:
        where.append(sql.SQL("reason = %(reason)s"))
        params["reason"] = reason.value
    if since is not None:
        where.append(sql.SQL("received_at >= %(since)s"))
        params["since"] = since
    query = _LIST.format(where=sql.SQL(" AND ").join(where))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    items = []
    for r in rows:
        raw = bytes(r.pop("payload"))
        text, encoding = _payload(raw)
        items.append(r | {"payload": text, "payload_encoding": encoding, "size_bytes": len(raw)})
    return items


async def replay_dead_letters(
    settings: LimitSettings, *, reason: Reason | None, limit: int, now: datetime
) -> ReplayReport:
    """Re-validate dead letters not yet stored and store what passes (`cityvitals.replay`)."""
    return await replay(settings, reason=reason, limit=limit, now=now)
