"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cityvitals.api.deps import EngineDep, PoolDep
from cityvitals.api.engine import DB_FAULTS
from cityvitals.db.migrate import head_revision

router = APIRouter(tags=["operations"])
# /readyz must answer quickly even while the database hangs.
READY_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrated to this code's revision",
    responses={503: {"description": "Database unreachable or not migrated"}},
)
async def readyz(pool: PoolDep, engine: EngineDep) -> JSONResponse:
    """200 when the database answers and is at the head revision, else 503."""
    head = head_revision()
    body: dict[str, Any] = {"head_revision": head, "snapshot_age_s": round(engine.age_s(), 3)}
    try:
        async with pool.connection(timeout=READY_TIMEOUT_S) as conn:
            cur = await conn.execute(
                "SELECT CASE WHEN to_regclass('alembic_version') IS NULL THEN NULL "
                "ELSE (SELECT version_num FROM alembic_version LIMIT 1) END"
            )
            row = await cur.fetchone()
    except DB_FAULTS as err:
        body |= {"status": "unavailable", "database": "unreachable", "error": str(err)[:200]}
        return JSONResponse(body, status_code=503)
    revision = row[0] if row else None
    body["revision"] = revision
    if revision != head:
        body |= {"status": "unavailable", "database": "not migrated"}
        return JSONResponse(body, status_code=503)
    body |= {"status": "ok", "database": "ok"}
    return JSONResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus metrics (docs/contracts.md)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
