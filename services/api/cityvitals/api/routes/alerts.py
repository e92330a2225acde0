"""`/v1/alerts`: per-site and per-device threshold crossings, active and cleared."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from cityvitals.api.deps import PoolDep
from cityvitals.api.models import DISTRICT_PATTERN, AlertList
from cityvitals.api.services import alerts

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
    items = await alerts.list_alerts(
        pool, state=state, district=district, severity=severity, limit=limit
    )
    return {"items": items}
