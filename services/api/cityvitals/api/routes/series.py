"""`/v1/series`: an indicator's history from the per-minute samples or the hourly rollup."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cityvitals.api.deps import DATE_TIME, ClockDep, EngineDep, PoolDep, invalid, parse_time
from cityvitals.api.models import DISTRICT_PATTERN, SeriesOut
from cityvitals.api.services import series
from cityvitals.catalogue import CATALOGUE

router = APIRouter(prefix="/v1/series", tags=["series"])
STEP_RE = re.compile(r"^([1-9]\d{0,8})([smhd]?)$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_STEP_S = 366 * 86400
DAY = timedelta(days=1)


def _step_seconds(step: str) -> int:
    m = STEP_RE.match(step)
    if m is None:
        raise invalid(("query", "step"), "seconds, or a number with s, m, h or d (e.g. 5m)")
    seconds = int(m.group(1)) * UNIT_S[m.group(2)]
    # Samples are per minute: a shorter step is widened to one minute.
    return min(max(seconds, series.MIN_STEP_S), MAX_STEP_S)


@router.get("", response_model=SeriesOut, summary="An indicator's history, bucketed")
async def get_series(
    pool: PoolDep,
    clock: ClockDep,
    engine: EngineDep,
    indicator: Annotated[
        str,
        Query(
            examples=["energy.load_kw"],
            max_length=100,
            json_schema_extra={"enum": [i.id for i in CATALOGUE]},
        ),
    ],
    district: Annotated[
        str,
        Query(pattern=DISTRICT_PATTERN[:-2] + "|city)$", description="a district id or `city`"),
    ] = "city",
    from_: Annotated[
        str | None,
        Query(alias="from", description="default: `to` - 24 h", json_schema_extra=DATE_TIME),
    ] = None,
    to: Annotated[
        str | None, Query(description="default: now", json_schema_extra=DATE_TIME)
    ] = None,
    step: Annotated[
        str,
        Query(
            description="bucket: seconds or 30m, 1h, 1d (at least 60 s)",
            pattern=STEP_RE.pattern,
        ),
    ] = "5m",
) -> dict[str, Any]:
    """Average, minimum and maximum per bucket; hourly buckets and up read the rollup."""
    # The catalogue the app loaded at start, with the deployment's thresholds file.
    ind = engine.catalogue.get(indicator)
    if ind is None:
        raise invalid(("query", "indicator"), f"unknown indicator {indicator!r}")
    if district != "city" and "district" not in ind.levels:
        raise invalid(("query", "district"), f"{indicator} is computed for the city only")
    step_s = _step_seconds(step)
    end = parse_time(to, ("query", "to")) if to is not None else clock()
    try:
        start = parse_time(from_, ("query", "from")) if from_ is not None else end - DAY
    except OverflowError:
        raise invalid(("query", "to"), "out of range") from None
    if start > end:
        raise invalid(("query", "from"), "must not be after `to`")
    return await series.get_series(
        pool, indicator=ind, scope=district, start=start, end=end, step_s=step_s
    )
