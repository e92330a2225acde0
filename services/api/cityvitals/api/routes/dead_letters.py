"""`/v1/dead-letters`: rejected messages, listable and re-playable after a fix."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

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
from cityvitals.api.services import dead_letters
from cityvitals.reasons import Reason

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
ReasonParam = Annotated[Reason | None, Query(description="only this reason code (docs/wire.md)")]


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
    after = parse_time(since, ("query", "since")) if since is not None else None
    items = await dead_letters.list_dead_letters(pool, reason=reason, since=after, limit=limit)
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
    return await dead_letters.replay_dead_letters(settings, reason=reason, limit=limit, now=clock())
