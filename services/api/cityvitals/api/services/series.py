"""An indicator's history, bucketed, from the per-minute samples or the hourly rollup."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cityvitals.api.queries import schema_facts
from cityvitals.catalogue import Indicator

MIN_STEP_S = 60
MAX_POINTS = 10000
# date_bin's origin, the same whole hour the hourly rollup uses.
_ORIGIN = sql.SQL("TIMESTAMPTZ '2000-01-03 00:00:00+00'")
# Buckets of the samples; the rollup's hours combined weighted by their sample counts.
_FROM_SAMPLES = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(step)s), ts, {origin}) AS ts, "
    "avg(value) AS value, min(value) AS min, max(value) AS max FROM indicator_samples "
    "WHERE indicator = %(indicator)s AND scope = %(scope)s AND ts >= %(from)s AND ts < %(to)s "
    "GROUP BY 1 ORDER BY 1"
).format(origin=_ORIGIN)
_FROM_ROLLUP = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(step)s), bucket, {origin}) AS ts, "
    "sum(avg_value * samples) / nullif(sum(samples) FILTER (WHERE avg_value IS NOT NULL), 0) "
    "AS value, min(min_value) AS min, max(max_value) AS max FROM indicator_samples_1h "
    "WHERE indicator = %(indicator)s AND scope = %(scope)s "
    "AND bucket >= %(from)s AND bucket < %(to)s GROUP BY 1 ORDER BY 1"
).format(origin=_ORIGIN)


async def get_series(
    pool: AsyncConnectionPool[Any],
    *,
    indicator: Indicator,
    scope: str,
    start: datetime,
    end: datetime,
    step_s: int,
) -> dict[str, Any]:
    """Average, minimum and maximum per bucket of `step_s` between `start` and `end`.

    A range with more than MAX_POINTS buckets gets a wider step rather than a refusal;
    steps of whole hours read the hourly rollup where there is one.
    """
    span_s = (end - start).total_seconds()
    if span_s / step_s > MAX_POINTS:
        step_s = math.ceil(span_s / MAX_POINTS / MIN_STEP_S) * MIN_STEP_S
    params = {
        "step": float(step_s),
        "indicator": indicator.id,
        "scope": scope,
        "from": start,
        "to": end,
    }
    source = "samples"
    async with pool.connection() as conn:
        if step_s >= 3600 and step_s % 3600 == 0 and (await schema_facts(conn)).get("has_rollup"):
            source = "rollup"
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_FROM_ROLLUP if source == "rollup" else _FROM_SAMPLES, params)
            points = await cur.fetchall()
    return {
        "indicator": indicator.id,
        "district": scope,
        "unit": indicator.unit,
        "step_s": step_s,
        "source": source,
        "from": start,
        "to": end,
        "points": points,
    }
