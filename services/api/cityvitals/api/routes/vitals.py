"""`/v1/vitals`: the pre-serialized snapshot, with ETag and gzip."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from cityvitals.api.deps import EngineDep
from cityvitals.api.documents import Served
from cityvitals.api.models import DistrictDetailOut, Problem, VitalsOut
from cityvitals.catalogue import DISTRICT_BY_ID

router = APIRouter(prefix="/v1/vitals", tags=["vitals"])
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Unchanged since the ETag sent in If-None-Match"}
}


def _matches(header: str, etag: str) -> bool:
    # RFC 9110 §13.1.2: weak comparison, a list of tags, or "*".
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def serve(request: Request, served: Served) -> Response:
    """A pre-serialized document: 304 when the client has it, gzip when it accepts it."""
    etag = "W/" + served.etag
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(served.gzipped(), media_type="application/json", headers=headers)
    return Response(served.body, media_type="application/json", headers=headers)


@router.get(
    "",
    response_model=VitalsOut,
    responses=NOT_MODIFIED,
    summary="City snapshot: every indicator for the city and the 16 districts",
)
async def get_vitals(request: Request, engine: EngineDep) -> Response:
    """The newest snapshot (at most `snapshot_interval_s` old; `stale` while the DB is away)."""
    return serve(request, engine.document())


@router.get(
    "/districts/{district}",
    response_model=DistrictDetailOut,
    responses={**NOT_MODIFIED, 404: {"model": Problem, "description": "Unknown district"}},
    summary="One district with its sites (parking lots, waste huts, energy sites)",
)
async def get_district(request: Request, engine: EngineDep, district: str) -> Response:
    """One district's indicators and its sites' indicators."""
    if district not in DISTRICT_BY_ID:
        raise HTTPException(status_code=404, detail=f"unknown district {district!r}")
    return serve(request, await engine.district_document(district))
