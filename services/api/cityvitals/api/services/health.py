"""Readiness: the database answers and is migrated to this code's revision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from cityvitals.api.engine import DB_FAULTS
from cityvitals.api.queries import schema_facts
from cityvitals.db.migrate import head_revision


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the API is ready, and the body `/readyz` answers with."""

    ready: bool
    body: dict[str, Any]


async def readiness(
    pool: AsyncConnectionPool[Any], *, snapshot_age_s: float, timeout_s: float
) -> Readiness:
    """Ready when the database answers within `timeout_s` and is at the head revision."""
    head = head_revision()
    body: dict[str, Any] = {"head_revision": head, "snapshot_age_s": round(snapshot_age_s, 3)}
    try:
        async with pool.connection(timeout=timeout_s) as conn:
            try:
                revision = (await schema_facts(conn)).get("revision")
            except errors.UndefinedTable:
                revision = None  # never migrated: no alembic_version yet
    except DB_FAULTS as err:
        body |= {"status": "unavailable", "database": "unreachable", "error": str(err)[:200]}
        return Readiness(ready=False, body=body)
    body["revision"] = revision
    if revision != head:
        body |= {"status": "unavailable", "database": "not migrated"}
        return Readiness(ready=False, body=body)
    body |= {"status": "ok", "database": "ok"}
    return Readiness(ready=True, body=body)
