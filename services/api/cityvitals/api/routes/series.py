"""`/v1/series`: an indicator's history from the per-minute samples or the hourly rollup."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg import sql
from psycopg.rows import dict_row

from cityvitals.api.deps import DATE_TIME, ClockDep, PoolDep, SettingsDep, invalid, parse_time
from cityvitals.api.models import DISTRICT_PATTERN, SeriesOut
from cityvitals.catalogue import CATALOGUE, with_overrides

router = APIRouter(prefix="/v1/series", tags=["series"])
STEP_RE = re.compile(r"^([1-9]\d{0,8})([smhd]?)$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_STEP_S = 60
MAX_STEP_S = 366 * 86400
MAX_POINTS = 10000
DAY = timedelta(days=1)
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
    # Samples are per minute: a shorter step is widened to one minute.
    return min(max(seconds, MIN_STEP_S), MAX_STEP_S)


@router.get("", response_model=SeriesOut, summary="An indicator's history, bucketed")
async def get_series(
    pool: PoolDep,
    clock: ClockDep,
    settings: SettingsDep,
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
    catalogue = with_overrides(settings.thresholds_file)
    ind = catalogue.get(indicator)
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
    span_s = (end - start).total_seconds()
    if span_s / step_s > MAX_POINTS:
        # A long range with a short step: widen the step rather than refuse the chart.
        step_s = math.ceil(span_s / MAX_POINTS / MIN_STEP_S) * MIN_STEP_S
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
