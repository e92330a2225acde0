"""The SQL every domain builds on: which devices are online, the row fetch, the
threshold tests as SQL, and the row and parameter types several domains share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import args_row

from cityvitals.catalogue import ONLINE_FACTOR, REPORT_INTERVAL_S, Thresholds

# Rows converted per call: psycopg converts a fetch in one go without letting other
# threads run, and the snapshot is read on a thread beside the loop serving screens.
ROWS_PER_FETCH = 200

# A device is online when its newest message of any channel is younger than
# ONLINE_FACTOR report intervals and no later-or-equal retained status said offline:
# a message after the last will revives the device (see docs/indicators.md). The write
# path keeps `last_seen_at` as the newest message time by its `ts` (the receive time
# only where it had none), so a backlog of old readings delivered now stays offline.
INTERVAL_SQL = sql.SQL(
    "coalesce(d.report_interval_s, CASE d.kind WHEN 'parking' THEN %(iv_parking)s::int "
    "WHEN 'waste' THEN %(iv_waste)s::int WHEN 'energy' THEN %(iv_energy)s::int END)"
)
ONLINE_SQL = sql.SQL(
    "coalesce(s.last_seen_at > %(now)s::timestamptz - make_interval(secs => "
    "%(factor)s::float8 * {interval}) AND NOT coalesce(s.status_online = false "
    "AND s.status_at >= s.last_seen_at, false), false)"
).format(interval=INTERVAL_SQL)
DEVICES_CTE = sql.SQL(
    "dev AS (SELECT d.*, {interval} AS iv, {online} AS online, "
    "s.last_seen_at, s.status_online FROM devices d "
    "LEFT JOIN device_state s ON s.device_id = d.device_id)"
).format(interval=INTERVAL_SQL, online=ONLINE_SQL)


def base_params(now: datetime) -> dict[str, Any]:
    """Parameters every query built on `DEVICES_CTE` needs."""
    return {
        "now": now,
        "factor": float(ONLINE_FACTOR),
        "iv_parking": REPORT_INTERVAL_S["parking"],
        "iv_waste": REPORT_INTERVAL_S["waste"],
        "iv_energy": REPORT_INTERVAL_S["energy"],
    }


# The entities of the per-second snapshot: reporting and either past the lowest bound of
# one of their per-entity thresholds, or carrying an active alert (to escalate or clear).
ACTIVE_ALERT_SQL = sql.SQL(
    "{entity} IN (SELECT entity FROM alerts WHERE state = 'active' AND indicator = ANY({ids}))"
)

# The flagged entities of the per-second snapshot: reporting, and past a threshold or
# with an active alert (the `{}` is the domain's test).
ONLY_FLAGGED = sql.SQL("AND dev.online AND l.ts IS NOT NULL AND ({})")


def beyond(column: str, th: Thresholds | None, name: str, params: dict[str, Any]) -> sql.Composable:
    """`column` past the lowest bound of `th` (any status but normal), as SQL."""
    bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None] if th else []
    if th is None or not bounds:
        return sql.SQL("false")
    if th.direction == "lt":
        params[name] = max(bounds)
        return sql.SQL("coalesce({} < %({})s::float8, false)").format(
            sql.SQL(column), sql.SQL(name)
        )
    params[name] = min(bounds)
    return sql.SQL("coalesce({} >= %({})s::float8, false)").format(sql.SQL(column), sql.SQL(name))


def active(entity: str, *indicators: str) -> sql.Composable:
    """`entity` has an active alert on one of `indicators`, as SQL."""
    return ACTIVE_ALERT_SQL.format(entity=sql.SQL(entity), ids=sql.Literal(list(indicators)))


async def fetch_rows(
    conn: AsyncConnection[Any],
    cls: type[Any],
    query: sql.SQL | sql.Composed,
    params: dict[str, Any],
) -> list[Any]:
    """The rows of a query as instances of `cls`, converted a few at a time.

    Columns are matched to the fields by name: a query whose columns are not named as
    the fields of `cls`, in their order, raises before a row is converted.
    """
    # The rows are built positionally (psycopg's `args_row`, several times faster than
    # keyword construction), so the names are checked once per query instead.
    async with conn.cursor(row_factory=args_row(cls)) as cur:
        await cur.execute(query, params)
        columns = [c.name for c in cur.description or ()]
        expected = [f.name for f in fields(cls)]
        if columns != expected:
            raise RuntimeError(f"{cls.__name__} from columns {columns}, not {expected}")
        rows: list[Any] = []
        while batch := await cur.fetchmany(ROWS_PER_FETCH):
            rows += batch
        return rows


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over the parking sensors, the waste huts or the energy meters of one district
    (None: no district).

    The counts follow the per-entity rules of `compute.Builder` exactly; a reporting
    device is an online one with a latest reading.
    """

    district: str | None
    kind: str
    registered: int
    online: int
    reporting: int
    newest: datetime | None
    max_iv: int
    low_battery: int
    bins: int
    fill_sum: float
    huts_full: int
    gas_alarms: int
    fire_risk: int
    seepage: int
    dropoffs: int
    load_kw: float
    adjustable_kw: float
    consumption_kwh: float
    low_pf: int
    voltage_dev: int
    key_registered: int
    key_online: int
    occupied: int
    lots_near_full: int


@dataclass(frozen=True, slots=True)
class EntityThresholds:
    """The per-entity thresholds and limits in force (the catalogue's, or a deployment's).

    The SQL sums and the row-by-row computation both read these, so what a count counts
    and the status its entities take move together when a deployment overrides them.
    """

    full: Thresholds
    fire: Thresholds
    fill: Thresholds | None
    power_factor: Thresholds
    load_share: Thresholds
    lot_near_full: float
    # gas -> limit from which a hut is counted (warning) and from which it is critical
    gas_warning: Mapping[str, float]
    gas_critical: Mapping[str, float]
    # a meter is counted (warning) outside [voltage_low, voltage_high]
    voltage_low: float
    voltage_high: float
    # kind -> battery voltage below which a device counts as low
    low_battery_v: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SlowInputs:
    """The slower figures, refreshed every `slow_refresh_interval_s`."""

    day: date | None = None
    # district (None = unassigned) -> free→occupied transitions of online sensors, 24 h
    transitions: dict[str | None, int] | None = None
    # district -> (received, expected) from `seq` over the last hour
    completeness: dict[str | None, tuple[int, int]] | None = None
    # scope -> max 1-minute load sampled since local midnight
    peaks: dict[str, float] | None = None
