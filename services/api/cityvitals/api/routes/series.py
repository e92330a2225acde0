"""`/v1/series`: an indicator's history from the per-minute samples or the hourly rollup."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg import sql
from psycopg.rows import dict_row

from cityvitals.api.deps import ClockDep, PoolDep, SettingsDep, as_utc, invalid
from cityvitals.api.models import DISTRICT_PATTERN, SeriesOut
from cityvitals.catalogue import with_overrides

router = APIRouter(prefix="/v1/series", tags=["series"])
STEP_RE = re.compile(r"^(\d{1,9})([smhd]?)$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_STEP_S = 60
MAX_STEP_S = 366 * 86400
MAX_POINTS = 10000
# date_bin's origin, the same whole hour the hourly rollup uses.
ORIGIN = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"
# Buckets of the samples; the rollup's hours combined weighted by their sample counts.
_FROM_SAMPLES = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(step)s), ts, {origin}) AS ts, "
    "avg(value) AS value, min(value) AS min, max(value) AS max FROM indicator_samples "
    "WHERE indicator = %(indicator)s AND scope = %(scope)s AND ts >= %(from)s AND ts < %(to)s "
    "GROUP BY 1 ORDER BY 1"
).format(origin=sql.SQL(ORIGIN))
_FROM_ROLLUP = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(step)s), bucket, {origin}) AS ts, "
    "sum(avg_value * samples) / nullif(sum(samples) FILTER (WHERE avg_value IS NOT NULL), 0) "
    "AS value, min(min_value) AS min, max(max_value) AS max FROM indicator_samples_1h "
    "WHERE indicator = %(indicator)s AND scope = %(scope)s "
    "AND bucket >= %(from)s AND bucket < %(to)s GROUP BY 1 ORDER BY 1"
).format(origin=sql.SQL(ORIGIN))


def _step_seconds(step: str) -> int:
    m = STEP_RE.match(step)
    if m is None:
        raise invalid(("query", "step"), "seconds, or a number with s, m, h or d (e.g. 5m)")
    seconds = int(m.group(1)) * UNIT_S[m.group(2)]
    if not MIN_STEP_S <= seconds <= MAX_STEP_S:
        raise invalid(("query", "step"), f"must be between {MIN_STEP_S} s and 366 d")
    return seconds


@router.get("", response_model=SeriesOut, summary="An indicator's history, bucketed")
async def get_series(
    pool: PoolDep,
    clock: ClockDep,
    settings: SettingsDep,
    indicator: Annotated[str, Query(examples=["energy.load_kw"], max_length=100)],
    district: Annotated[
        str,
        Query(pattern=DISTRICT_PATTERN[:-2] + "|city)$", description="a district id or `city`"),
    ] = "city",
    from_: Annotated[
        datetime | None, Query(alias="from", description="default: `to` - 24 h")
    ] = None,
    to: Annotated[datetime | None, Query(description="default: now")] = None,
    step: Annotated[
        str, Query(description="bucket: seconds or 30m, 1h, 1d (at least 60 s)", max_length=12)
    ] = "5m",
) -> dict[str, Any]:
    """Average, minimum and maximum per bucket; hourly buckets and up read the rollup."""
    catalogue = with_overrides(settings.thresholds_file)
    ind = catalogue.get(indicator)
    if ind is None:
        raise invalid(("query", "indicator"), f"unknown indicator {indicator!r}")
    if district != "city" and "district" not in ind.levels:
        raise invalid(("query", "district"), f"{indicator} is computed for the city only")
    step_s = _step_seconds(step)
    try:
        end = as_utc(to) if to is not None else clock()
        start = as_utc(from_) if from_ is not None else end - timedelta(days=1)
    except (OverflowError, ValueError):
        raise invalid(("query", "from"), "out of range") from None
    if start >= end:
        raise invalid(("query", "from"), "must be before `to`")
    if (end - start).total_seconds() / step_s > MAX_POINTS:
        raise invalid(("query", "step"), f"too many buckets (at most {MAX_POINTS})")
    params = {"step": float(step_s), "indicator": indicator, "scope": district}
    source = "samples"
    async with pool.connection() as conn:
        if step_s >= 3600 and step_s % 3600 == 0:
            cur = await conn.execute("SELECT to_regclass('indicator_samples_1h') IS NOT NULL")
            row = await cur.fetchone()
            if row and row[0]:
                source = "rollup"
        async with conn.cursor(row_factory=dict_row) as dcur:
            await dcur.execute(
                _FROM_ROLLUP if source == "rollup" else _FROM_SAMPLES,
                params | {"from": start, "to": end},
            )
            points = await dcur.fetchall()
    return {
        "indicator": indicator,
        "district": district,
        "unit": ind.unit,
        "step_s": step_s,
        "source": source,
        "from": start,
        "to": end,
        "points": points,
    }
