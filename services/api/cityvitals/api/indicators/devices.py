"""Devices 设备运行: online ratio, completeness, low battery, ingest lag, unassigned
devices, rejected messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from cityvitals.api.indicators.base import KINDS, ScopeView, breaks_down, computes, ratio
from cityvitals.api.indicators.db import DEVICES_CTE
from cityvitals.db.schema import LAG_BOUNDS_S

# Minutes of ingest counters behind the lag p95 and the rejected ratio.
LAG_WINDOW_MIN = 5
REJECTED_WINDOW_MIN = 10
LAG_QUANTILE = 0.95


@dataclass(frozen=True, slots=True)
class IngestRow:
    """One minute of one collector's ingest counters."""

    minute: datetime
    received: int
    rejected: int
    lag_counts: list[int]


COMPLETENESS_SQL = sql.SQL(
    "WITH {dev}, "
    "q AS (SELECT device_id, sum(n)::bigint AS n, max(max_seq) - min(min_seq) + 1 AS expected "
    "FROM seq_10m WHERE bucket > %(since)s AND bucket <= %(now)s GROUP BY device_id) "
    "SELECT dev.district, sum(q.n)::bigint, sum(greatest(q.expected, q.n))::bigint FROM dev "
    "JOIN q ON q.device_id = dev.device_id WHERE dev.online GROUP BY dev.district"
).format(dev=DEVICES_CTE)


@computes("devices.online_ratio")
def online_ratio(s: ScopeView) -> float | None:
    """Online ÷ registered devices, every kind."""
    return ratio(sum(s.acc.online.values()), sum(s.acc.registered.values()))


@breaks_down("devices.online_ratio")
def online_ratio_by_kind(s: ScopeView, value: float | None) -> dict[str, float | None] | None:
    """Online ÷ registered devices per kind."""
    return {k: ratio(s.acc.online[k], s.acc.registered[k]) for k in KINDS}


@computes("devices.completeness_1h")
def completeness_1h(s: ScopeView) -> float | None:
    """Received ÷ expected (from `seq`) over the last hour."""
    if s.slow.completeness is None:
        return None
    got = sum(s.slow.completeness.get(k, (0, 0))[0] for k in s.slow_keys)
    expected = sum(s.slow.completeness.get(k, (0, 0))[1] for k in s.slow_keys)
    return ratio(got, expected)


@computes("devices.low_battery")
def low_battery(s: ScopeView) -> float | None:
    """Reporting devices under their kind's battery threshold."""
    return float(s.acc.low_battery) if sum(s.acc.online.values()) else None


@computes("devices.ingest_lag_p95_s")
def ingest_lag_p95_s(s: ScopeView) -> float | None:
    """p95 of stored time - device ts over the last minutes."""
    return ingest_lag_p95(s.ingest, s.now)


@computes("devices.unassigned")
def unassigned(s: ScopeView) -> float | None:
    """Auto-registered devices without a district."""
    return float(s.unassigned)


@computes("devices.rejected_ratio_10m")
def rejected_ratio_10m(s: ScopeView) -> float | None:
    """Rejected ÷ received over the last ten minutes."""
    return rejected_ratio(s.ingest, s.now)


def _window(rows: Iterable[IngestRow], now: datetime, minutes: int) -> list[IngestRow]:
    """Rows of the current minute and the `minutes - 1` before it."""
    current = now.replace(second=0, microsecond=0)
    first = current.timestamp() - 60 * (minutes - 1)
    return [r for r in rows if first <= r.minute.timestamp() <= current.timestamp()]


def ingest_lag_p95(rows: Iterable[IngestRow], now: datetime) -> float | None:
    """p95 of stored time - device ts, interpolated linearly within its histogram bucket."""
    counts = [0] * (len(LAG_BOUNDS_S) + 1)
    for r in _window(rows, now, LAG_WINDOW_MIN):
        for i, c in enumerate(r.lag_counts[: len(counts)]):
            counts[i] += int(c)
    total = sum(counts)
    if total == 0:
        return None
    rank = LAG_QUANTILE * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(LAG_BOUNDS_S):
                # Beyond the last bound the histogram says only "slower than this".
                return LAG_BOUNDS_S[-1]
            lower = 0.0 if i == 0 else LAG_BOUNDS_S[i - 1]
            upper = LAG_BOUNDS_S[i]
            return lower + (upper - lower) * (rank - seen) / c
        seen += c
    return LAG_BOUNDS_S[-1]


def rejected_ratio(rows: Iterable[IngestRow], now: datetime) -> float | None:
    """Rejected ÷ received over the last ten minutes."""
    window = _window(rows, now, REJECTED_WINDOW_MIN)
    received = sum(r.received for r in window)
    return ratio(sum(r.rejected for r in window), received)
