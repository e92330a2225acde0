"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cityvitals.api.deps import EngineDep, PoolDep
from cityvitals.api.services import health

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
    ready = await health.readiness(pool, snapshot_age_s=engine.age_s(), timeout_s=READY_TIMEOUT_S)
    return JSONResponse(ready.body, status_code=200 if ready.ready else 503)


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
