"""The city's state in memory, changed by what changes: the per-second snapshot's inputs.

`Fleet` holds every registered device's latest state and, per district and kind, the
sums the snapshot is built from (what `queries.fetch_fast` computes from scratch in
SQL), plus the lots, huts, meters and energy sites past a threshold. A refresh
(`sync`) reads only what changed since the previous one:

- the rows of `vitals_changes` (see `cityvitals.changes`) of the transactions it has
  not seen yet, then the current state of just the devices they name, by key. Each
  such device's old contribution is taken out of its sums and its new one put in;
- the devices whose online window ended since the last refresh (a device going quiet
  changes the figures without any message): each counted device waits in a bucket of
  the second its window ends, so passing time costs the devices it turns offline.

A refresh therefore costs O(districts + devices that changed), not O(fleet): a quiet
city reads one empty index range per second. Two collectors never meet here (each
batch appends its own log row), and the API — which alone knows the thresholds in
force (`THRESHOLDS_FILE`) — turns states into counts, so a deployment's thresholds
move the counts and the statuses together, exactly as in the SQL definition.

Everything is reloaded from scratch when the log cannot be trusted to be complete:
at the first refresh, when a row says "anything may have changed" (a rebuild, a
migration), when a change names more devices than a reload reads, when the last
successful refresh is older than half the log's retention, and at local midnight
(the "since midnight" figures start again). A sum of floats is kept by adding and
subtracting; it is recomputed from the devices at each reload, and the counts that
decide whether a figure has a value are integers, so drift never shows.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from cityvitals.api.alerts import ActiveAlert
from cityvitals.api.indicators.db import (
    INTERVAL_SQL,
    EntityThresholds,
    SlowInputs,
    Totals,
    base_params,
)
from cityvitals.api.indicators.devices import IngestRow
from cityvitals.api.indicators.energy import MeterRow, SiteLoadRow
from cityvitals.api.indicators.parking import LotRow, parking_totals
from cityvitals.api.indicators.waste import HutRow
from cityvitals.api.queries import FastInputs
from cityvitals.catalogue import ONLINE_FACTOR, Thresholds
from cityvitals.changes import CHANGES_RETENTION

US = 1_000_000
# Fixed point of the maintained sums (see `Sums`).
SCALE = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The online window of a device never heard, or offline by its last will.
NEVER = -1
# Devices read per statement when folding changes (an `= ANY(array)` by key).
CHUNK = 20_000
# A change naming more devices than this share of the fleet reloads everything (a
# reload reads a page of devices for about what a keyed read of two thirds of them costs).
RELOAD_SHARE = 0.6

HUT_ALERTS = (
    "waste.huts_full",
    "waste.gas_alarms",
    "waste.fire_risk",
    "waste.seepage",
    "waste.fill_pct_mean",
)
METER_ALERTS = ("energy.low_power_factor", "energy.voltage_deviation")
SITE_ALERT = "energy.load_kw"
LOT_ALERT = "parking.occupancy_ratio"

_READ_CHANGES = (
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
    "coalesce(bool_or(devices IS NULL), false), "
    "coalesce(array_agg(DISTINCT d) FILTER (WHERE d IS NOT NULL), '{}') "
    "FROM vitals_changes LEFT JOIN LATERAL unnest(devices) d ON true WHERE xid >= %s"
)
_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_DEVICES = sql.SQL(
    "SELECT d.device_id, d.kind, d.district, d.site, {interval} AS iv, d.auto_registered, "
    "d.key_consumer, d.contract_kw, s.last_seen_at, s.status_online, s.status_at, d.name "
    "FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id {where}"
)
_PARKING = sql.SQL(
    "SELECT device_id, ts, occupied, coalesce(battery_v < %(low)s::float8, false) "
    "FROM latest_parking {where}"
)
_PAGE = "SELECT device_id FROM devices WHERE device_id > %s ORDER BY device_id LIMIT %s"
_BY_ID = sql.SQL("WHERE d.device_id = ANY(%(ids)s)")
_BY_ID_PLAIN = sql.SQL("WHERE device_id = ANY(%(ids)s)")
# Each kind's latest values and today's figures, by key: the same columns as the
# definition's `HUTS_SQL` and `METERS_SQL`, without their scan of the registry.
_HUT_VALUES = (
    "SELECT device_id, ts, coalesce(jsonb_array_length(bins), 0), fill_mean, fill_max, "
    "h2s_ppm, nh3_ppm, ch4_pct_lel, temp_c, seepage, "
    "coalesce(battery_v < %(low)s::float8, false) FROM latest_waste "
    "WHERE device_id = ANY(%(ids)s)"
)
_NO_HUT: tuple[Any, ...] = (None, None, 0, None, None, None, None, None, None, None, False)
_DROPOFFS = (
    "SELECT device_id, count(*) FROM events WHERE device_id = ANY(%(ids)s) "
    "AND type = 'off_hours_dropoff' AND ts >= %(midnight)s AND ts < %(next_midnight)s "
    "GROUP BY device_id"
)
_DEPOSITED = (
    "SELECT device_id, jsonb_object_agg(category, deposited_kg) FROM waste_daily "
    "WHERE device_id = ANY(%(ids)s) AND day = %(day)s GROUP BY device_id"
)
_METER_VALUES = (
    "SELECT device_id, ts, active_power_kw, voltage_v, power_factor, adjustable_kw "
    "FROM latest_energy WHERE device_id = ANY(%(ids)s)"
)
_NO_METER: tuple[Any, ...] = (None, None, None, None, None, None)
_CONSUMPTION = (
    "SELECT device_id, consumption_kwh FROM energy_daily "
    "WHERE device_id = ANY(%(ids)s) AND day = %(day)s"
)
# The windowed figures per device, by key: the definition's `COMPLETENESS_SQL` and
# `TRANSITIONS_SQL` before they join the registry and sum per district.
_SEQ_WINDOW = (
    "SELECT device_id, sum(n)::bigint, max(max_seq) - min(min_seq) + 1 FROM seq_10m "
    "WHERE device_id = ANY(%(ids)s) AND bucket > %(seq_since)s AND bucket <= %(now)s "
    "GROUP BY device_id"
)
_MOVES_WINDOW = (
    "SELECT device_id, sum(transitions)::bigint FROM parking_hourly "
    "WHERE device_id = ANY(%(ids)s) AND hour > %(moves_since)s AND hour <= %(now)s "
    "GROUP BY device_id"
)
# The same over every device, for when a window moves on.
_SEQ_ALL = (
    "SELECT device_id, sum(n)::bigint, max(max_seq) - min(min_seq) + 1 FROM seq_10m "
    "WHERE bucket > %(seq_since)s AND bucket <= %(now)s GROUP BY device_id"
)
_MOVES_ALL = (
    "SELECT device_id, sum(transitions)::bigint FROM parking_hourly "
    "WHERE hour > %(moves_since)s AND hour <= %(now)s GROUP BY device_id"
)
# `seq_10m` buckets start on every 10 minutes, `parking_hourly` hours on every hour: the
# buckets inside "the last hour" and "the last 24 hours" change only when `now` crosses
# such a boundary, and each window is named by the boundary it last crossed.
SEQ_BUCKET_US = 600 * US
SEQ_SPAN = timedelta(hours=1)
MOVES_BUCKET_US = 3600 * US
MOVES_SPAN = timedelta(hours=24)


async def _one(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query!r}")
    return tuple(row)


def _fx(value: float) -> int:
    return round(value * SCALE)


def micros(t: datetime) -> int:
    """An instant as integer microseconds since the epoch (exact, as PostgreSQL's)."""
    return (t - EPOCH) // timedelta(microseconds=1)


def beyond(value: float | None, th: Thresholds | None) -> bool:
    """`value` past the lowest bound of `th`: the SQL definition's `db.beyond`."""
    if th is None or value is None:
        return False
    bounds = [b for b in (th.attention, th.warning, th.critical) if b is not None]
    if not bounds:
        return False
    if th.direction == "lt":
        return value < max(bounds)
    return value >= min(bounds)


class Dev:
    """One registered device as the snapshot counts it."""

    __slots__ = (
        "auto",
        "comp",
        "contract",
        "counted",
        "district",
        "expiry",
        "id",
        "iv",
        "key",
        "kind",
        "moves",
        "row",
        "site",
        "ts",
    )

    def __init__(
        self,
        device_id: str,
        kind: str,
        district: str | None,
        site: str | None,
        iv: int,
        auto: bool,
        key: bool,
        contract: float | None,
    ) -> None:
        self.id = device_id
        self.kind = kind
        self.district = district
        self.site = site
        self.iv = iv
        self.auto = auto
        self.key = key
        self.contract = contract
        # Online until this instant (microseconds; NEVER when not by time).
        self.expiry = NEVER
        # Whether the sums count it as online right now.
        self.counted = False
        # The latest reading's time, and its values: (occupied, low battery) for a
        # parking sensor, the `HutRow` or `MeterRow` for a hut or a meter.
        self.ts: datetime | None = None
        self.row: Any = None
        # Over the windows: (received, expected) from `seq` in the last hour, and a
        # parking sensor's free→occupied transitions in the last 24 hours.
        self.comp: tuple[int, int] | None = None
        self.moves = 0


@dataclass(slots=True)
class Sums:
    """The running sums of one district (None: no district) and kind."""

    registered: int = 0
    online: int = 0
    reporting: int = 0
    low_battery: int = 0
    occupied: int = 0
    lots_near_full: int = 0
    bins: int = 0
    # Sums of quantities in millionths, as integers: added and taken out exactly, so
    # a figure on a threshold never lands a hair beside it by float drift.
    fill_sum: int = 0
    huts_full: int = 0
    gas_alarms: int = 0
    fire_risk: int = 0
    seepage: int = 0
    dropoffs: int = 0
    load_kw: int = 0
    adjustable_kw: int = 0
    consumption_kwh: int = 0
    low_pf: int = 0
    voltage_dev: int = 0
    key_registered: int = 0
    key_online: int = 0
    received: int = 0
    expected: int = 0
    transitions: int = 0
    ivs: Counter[int] = field(default_factory=Counter)
    newest: datetime | None = None
    # The newest reading left the sums: `newest` is found again from the members.
    stale_newest: bool = False
    # an ordered set: a device leaves it in O(1)
    members: dict[Dev, None] = field(default_factory=dict)


@dataclass(slots=True)
class Group:
    """A parking lot or an energy site: the sums its own check needs."""

    district: str | None
    site: str
    registered: int = 0
    online: int = 0
    reporting: int = 0
    occupied: int = 0
    low_battery: int = 0
    load_kw: int = 0  # millionths of kW
    loads: int = 0
    contract_kw: float = 0.0
    contracts: int = 0
    ivs: Counter[int] = field(default_factory=Counter)
    members: list[Dev] = field(default_factory=list)
    near_full: bool = False

    def newest(self) -> datetime | None:
        """The newest reading of its online members."""
        times = [d.ts for d in self.members if d.counted and d.ts is not None]
        return max(times) if times else None

    def lot_row(self) -> LotRow:
        """The lot as `LOTS_SQL` gives it."""
        return LotRow(
            district=self.district,
            site=self.site,
            registered=self.registered,
            online=self.online,
            reporting=self.reporting,
            occupied=self.occupied,
            low_battery=self.low_battery,
            newest=self.newest(),
            max_iv=max(self.ivs) if self.ivs else 0,
        )

    def load_row(self) -> SiteLoadRow | None:
        """The energy site as `SITE_LOADS_SQL` gives it (None: no load or contract)."""
        contract = self.contract_kw if self.contracts and self.contract_kw != 0 else None
        if not self.loads or contract is None:
            return None
        return SiteLoadRow(self.district, self.site, self.load_kw / SCALE, contract, self.newest())


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one refresh read."""

    reloaded: bool
    devices: int
    expired: int
    # Devices whose windowed figures changed because a window moved on (`seq_10m`'s
    # every 10 minutes).
    rewindowed: int = 0


class Fleet:
    """Every registered device, and the sums of the per-second snapshot, in memory."""

    def __init__(
        self, th: EntityThresholds, occupancy: Thresholds | None, *, now: datetime
    ) -> None:
        self.th = th
        self.occupancy = occupancy
        self._gas = (
            th.gas_warning["h2s_ppm"],
            th.gas_warning["nh3_ppm"],
            th.gas_warning["ch4_pct_lel"],
        )
        self.day: date | None = None
        self.xmin: int | None = None
        # The boundaries the windowed figures were read at (see `SEQ_BUCKET_US`).
        self.windows: tuple[int, int] | None = None
        self.synced_mono = 0.0
        self._reset(micros(now))

    def _reset(self, now_us: int) -> None:
        self.devices: dict[str, Dev] = {}
        self.sums: dict[tuple[str | None, str], Sums] = {}
        self.lots: dict[tuple[str | None, str], Group] = {}
        self.sites: dict[tuple[str | None, str], Group] = {}
        # entity -> lot or site key, for the active alerts
        self.lot_entities: dict[str, tuple[str | None, str]] = {}
        self.site_entities: dict[str, tuple[str | None, str]] = {}
        self.deposited: dict[tuple[str | None, str], list[int]] = {}
        self.unassigned = 0
        # Flagged by their values (whether online or not: checked when served).
        self.beyond_lots: set[tuple[str | None, str]] = set()
        self.beyond_huts: set[str] = set()
        self.beyond_meters: set[str] = set()
        self.beyond_sites: set[tuple[str | None, str]] = set()
        # second -> devices counted online whose window may end in it
        self._ending: dict[int, list[Dev]] = {}
        self._seconds: list[int] = []
        self.swept_us = now_us
        # Moves on whenever a flagged entity (or one becoming flagged) changes: while
        # it stands still, the flagged entities' checks are those of the last refresh.
        self.flag_epoch = getattr(self, "flag_epoch", 0) + 1
        # Huts and meters (ids), lots and sites (keys) served for their active alerts
        # at the last `inputs`: their changes move `flag_epoch` too.
        self.watched: set[str] = set()
        self.watched_groups: set[tuple[str | None, str]] = set()

    # -- reading -------------------------------------------------------------------

    async def sync(
        self,
        conn: AsyncConnection[Any],
        *,
        now: datetime,
        day: date,
        midnight: datetime,
        next_midnight: datetime,
    ) -> SyncResult:
        """Fold what changed since the last call (or load everything); then sweep."""
        now_us = micros(now)
        windows = (now_us // SEQ_BUCKET_US, now_us // MOVES_BUCKET_US)
        params = base_params(now) | {
            "day": day,
            "midnight": midnight,
            "next_midnight": next_midnight,
            "seq_since": now - SEQ_SPAN,
            "moves_since": now - MOVES_SPAN,
        }
        stale = time.monotonic() - self.synced_mono > CHANGES_RETENTION.total_seconds() / 2
        # The log and the xmin in one statement (one snapshot); the devices' states
        # after it may already be newer, which is harmless: whatever committed after
        # that snapshot has an xid at or above its xmin, and is read again next time.
        reload = self.xmin is None or self.day != day or stale
        ids: list[str] = []
        if not reload:
            xmin, everything, ids = await _one(conn, _READ_CHANGES, (self.xmin,))
            reload = everything or len(ids) > max(CHUNK, RELOAD_SHARE * len(self.devices))
        if reload:
            (xmin,) = await _one(conn, _XMIN, ())
            self._reset(now_us)
            n = await self._load(conn, params, now_us)
        else:
            n = 0
            for i in range(0, len(ids), CHUNK):
                n += await self._read(conn, params, ids[i : i + CHUNK], now_us)
        rewindowed = 0
        if not reload and self.windows is not None and windows != self.windows:
            seq, moves = (new != old for new, old in zip(windows, self.windows, strict=True))
            rewindowed = await self._rewindow(conn, params, seq=seq, moves=moves)
        self.windows = windows
        self.xmin = xmin
        self.day = day
        self.synced_mono = time.monotonic()
        expired = self.sweep(now)
        return SyncResult(reloaded=reload, devices=n, expired=expired, rewindowed=rewindowed)

    async def _windowed(
        self, conn: AsyncConnection[Any], p: dict[str, Any], kinds: set[str]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """The windowed figures of the devices `p["ids"]`."""
        cur = await conn.execute(_SEQ_WINDOW, p)
        comp = {r[0]: (int(r[1]), int(r[2])) for r in await cur.fetchall()}
        moves: dict[str, int] = {}
        if "parking" in kinds:
            cur = await conn.execute(_MOVES_WINDOW, p)
            moves = {r[0]: int(r[1]) for r in await cur.fetchall()}
        return comp, moves

    async def _rewindow(
        self, conn: AsyncConnection[Any], params: dict[str, Any], *, seq: bool, moves: bool
    ) -> int:
        """Read every device's windowed figures again where a window has moved on:
        `seq` the last hour's completeness, `moves` the last day's turnover.

        One pass over the window's rows (not a keyed read per device: at 2,000,000
        devices that took twice as long), streamed, each value moved into its sums."""
        devices = self.devices
        changed = 0
        passes = [(_SEQ_ALL, False)] if seq else []
        if moves:
            passes.append((_MOVES_ALL, True))
        for query, turnover in passes:
            if turnover:
                old = {k for k, d in devices.items() if d.moves}
            else:
                old = {k for k, d in devices.items() if d.comp is not None}
            async with conn.transaction(), conn.cursor(name="cityvitals_rewindow") as cur:
                cur.itersize = CHUNK
                await cur.execute(query, params)
                async for row in cur:
                    d = devices.get(row[0])
                    if d is None:
                        continue
                    old.discard(row[0])
                    if turnover:
                        changed += self._set_window(d, d.comp, int(row[1]))
                    else:
                        changed += self._set_window(d, (int(row[1]), int(row[2])), d.moves)
            for device_id in old:
                d = devices[device_id]
                if turnover:
                    changed += self._set_window(d, d.comp, 0)
                else:
                    changed += self._set_window(d, None, d.moves)
        return changed

    def _set_window(self, d: Dev, comp: tuple[int, int] | None, moves: int) -> bool:
        """A device's windowed figures, moved into its sums (what `_count` adds);
        whether they changed."""
        if comp == d.comp and moves == d.moves:
            return False
        if d.counted:
            s = self._sums(d.district, d.kind)
            if d.comp is not None:
                s.received -= d.comp[0]
                s.expected -= max(d.comp)
            if comp is not None:
                s.received += comp[0]
                s.expected += max(comp)
            if d.kind == "parking":
                s.transitions += moves - d.moves
        d.comp, d.moves = comp, moves
        return True

    async def _load(self, conn: AsyncConnection[Any], params: dict[str, Any], now_us: int) -> int:
        """Read every device, a page of keys at a time (bounded memory at any size)."""
        n, last = 0, ""
        while True:
            cur = await conn.execute(_PAGE, (last, CHUNK))
            ids = [r[0] for r in await cur.fetchall()]
            if not ids:
                return n
            n += await self._read(conn, params, ids, now_us)
            last = ids[-1]

    async def _read(
        self,
        conn: AsyncConnection[Any],
        params: dict[str, Any],
        ids: list[str],
        now_us: int,
    ) -> int:
        """Read the current state of the devices `ids` and fold it in."""
        p = params | {"ids": ids}
        cur = await conn.execute(_DEVICES.format(interval=INTERVAL_SQL, where=_BY_ID), p)
        registry = await cur.fetchall()
        kinds = {r[1] for r in registry}
        values: dict[str, tuple[datetime | None, Any]] = {}
        if "parking" in kinds:
            cur = await conn.execute(
                _PARKING.format(where=_BY_ID_PLAIN),
                p | {"low": self.th.low_battery_v.get("parking")},
            )
            values.update((r[0], (r[1], (bool(r[2]), bool(r[3])))) for r in await cur.fetchall())
        huts: dict[str, tuple[Any, ...]] = {}
        dropoffs: dict[str, int] = {}
        deposited: dict[str, dict[str, float]] = {}
        if "waste" in kinds:
            cur = await conn.execute(_HUT_VALUES, p | {"low": self.th.low_battery_v.get("waste")})
            huts = {r[0]: tuple(r) for r in await cur.fetchall()}
            cur = await conn.execute(_DROPOFFS, p)
            dropoffs = {r[0]: int(r[1]) for r in await cur.fetchall()}
            cur = await conn.execute(_DEPOSITED, p)
            deposited = {r[0]: r[1] for r in await cur.fetchall()}
        meters: dict[str, tuple[Any, ...]] = {}
        consumption: dict[str, float] = {}
        if "energy" in kinds:
            cur = await conn.execute(_METER_VALUES, p)
            meters = {r[0]: tuple(r) for r in await cur.fetchall()}
            cur = await conn.execute(_CONSUMPTION, p)
            consumption = {r[0]: r[1] for r in await cur.fetchall()}
        comp, moves = await self._windowed(conn, p, kinds)
        for reg in registry:
            device_id, kind, district, site, iv = reg[:5]
            name = reg[11]
            if kind == "waste":
                v = huts.get(device_id) or _NO_HUT
                values[device_id] = (
                    v[1],
                    HutRow(
                        device_id,
                        district,
                        site,
                        name,
                        iv,
                        True,
                        v[1],
                        v[2],
                        v[3],
                        v[4],
                        v[5],
                        v[6],
                        v[7],
                        v[8],
                        v[9],
                        v[10],
                        dropoffs.get(device_id, 0),
                        deposited.get(device_id, {}),
                    ),
                )
            elif kind == "energy":
                v = meters.get(device_id) or _NO_METER
                values[device_id] = (
                    v[1],
                    MeterRow(
                        device_id,
                        district,
                        site,
                        name,
                        iv,
                        True,
                        bool(reg[6]),
                        reg[7],
                        v[1],
                        v[2],
                        v[3],
                        v[4],
                        v[5],
                        consumption.get(device_id),
                    ),
                )
        present = set()
        for reg in registry:
            device_id = reg[0]
            present.add(device_id)
            ts, row = values.get(device_id, (None, None))
            window = (comp.get(device_id), moves.get(device_id, 0))
            self._update(reg[:11], ts, row, window, now_us)
        for device_id in ids:
            if device_id not in present and device_id in self.devices:
                self._remove(self.devices[device_id])
        return len(registry)

    # -- folding -------------------------------------------------------------------

    def _update(
        self,
        reg: Sequence[Any],
        ts: datetime | None,
        row: Any,
        window: tuple[tuple[int, int] | None, int],
        now_us: int,
    ) -> None:
        device_id, kind, district, site, iv, auto, key, contract, seen, up, status_at = reg
        d = self.devices.get(device_id)
        moved = d is None or (d.kind, d.district, d.site, d.iv, d.auto, d.key, d.contract) != (
            kind,
            district,
            site,
            iv,
            auto,
            bool(key),
            contract,
        )
        if d is not None and moved:
            self._remove(d)
            d = None
        if d is None:
            d = Dev(device_id, kind, district, site, int(iv), bool(auto), bool(key), contract)
            self._register(d, +1)
        else:
            self._count(d, -1)
        d.expiry = NEVER
        if seen is not None and not (up is False and status_at is not None and status_at >= seen):
            d.expiry = micros(seen) + int(ONLINE_FACTOR * d.iv) * US
        d.counted = now_us < d.expiry
        d.ts = ts
        d.row = row
        d.comp, d.moves = window
        self._count(d, +1)

    def _remove(self, d: Dev) -> None:
        self._count(d, -1)
        self._register(d, -1)
        # Inert where it still waits in a bucket of `_ending`.
        d.counted = False
        d.expiry = NEVER

    def _register(self, d: Dev, sign: int) -> None:
        """A device entering (+1) or leaving (-1) the registry's counts."""
        s = self._sums(d.district, d.kind)
        s.registered += sign
        s.ivs[d.iv] += sign
        if not s.ivs[d.iv]:
            del s.ivs[d.iv]
        if d.auto and d.district is None:
            self.unassigned += sign
        if sign > 0:
            self.devices[d.id] = d
            s.members[d] = None
        else:
            del self.devices[d.id]
            del s.members[d]
        group = self._group(d)
        if group is not None:
            group.registered += sign
            group.ivs[d.iv] += sign
            if not group.ivs[d.iv]:
                del group.ivs[d.iv]
            if sign > 0:
                group.members.append(d)
            else:
                group.members.remove(d)
            if d.kind == "energy" and d.contract is not None and d.contract != 0:
                group.contract_kw += sign * d.contract
                group.contracts += sign
            self._regroup(group)
        if d.kind == "energy":
            s.key_registered += sign * d.key

    def _sums(self, district: str | None, kind: str) -> Sums:
        s = self.sums.get((district, kind))
        if s is None:
            s = self.sums[(district, kind)] = Sums()
        return s

    def _group(self, d: Dev) -> Group | None:
        """The lot of a parking sensor, the site of a meter (None for the rest)."""
        if d.kind == "parking":
            if d.site is None:
                return None
            key = (d.district, d.site)
            g = self.lots.get(key)
            if g is None:
                g = self.lots[key] = Group(d.district, d.site)
                self.lot_entities[f"{d.district or 'unassigned'}/{d.site}"] = key
            return g
        if d.kind == "energy":
            key = (d.district, d.site or d.id)
            g = self.sites.get(key)
            if g is None:
                g = self.sites[key] = Group(d.district, key[1])
                self.site_entities[f"{d.district or 'unassigned'}/{key[1]}"] = key
            return g
        return None

    def _count(self, d: Dev, sign: int) -> None:
        """A device's current state entering (+1) or leaving (-1) the sums."""
        if d.id in self.beyond_huts or d.id in self.beyond_meters or d.id in self.watched:
            self.flag_epoch += 1
        on = d.counted
        rep = on and d.ts is not None
        s = self._sums(d.district, d.kind)
        s.online += sign * on
        s.reporting += sign * rep
        if on and d.comp is not None:
            s.received += sign * d.comp[0]
            s.expected += sign * max(d.comp)
        if rep and d.ts is not None:
            if sign > 0:
                if s.newest is None or d.ts > s.newest:
                    s.newest = d.ts
            elif s.newest is not None and d.ts >= s.newest:
                s.stale_newest = True
        if on and sign > 0:
            second = d.expiry // US
            bucket = self._ending.get(second)
            if bucket is None:
                bucket = self._ending[second] = []
                heapq.heappush(self._seconds, second)
            bucket.append(d)
        group = self._group(d)
        if group is not None and self._flagged_group(group):
            self.flag_epoch += 1
        if d.kind == "parking":
            occupied = on and d.row is not None and d.row[0]
            low = on and d.row is not None and d.row[1]
            s.occupied += sign * occupied
            s.low_battery += sign * low
            s.transitions += sign * on * d.moves
            if group is not None:
                group.online += sign * on
                group.reporting += sign * rep
                group.occupied += sign * occupied
                group.low_battery += sign * low
                self._regroup(group)
        elif d.kind == "waste":
            self._count_hut(d, s, sign, on, rep)
        elif d.kind == "energy":
            self._count_meter(d, s, group, sign, on, rep)

    def _count_hut(self, d: Dev, s: Sums, sign: int, on: bool, rep: bool) -> None:
        h: HutRow | None = d.row
        if h is None:
            self.beyond_huts.discard(d.id)
            return
        th = self.th
        gas = any(
            v is not None and v >= limit
            for v, limit in zip((h.h2s_ppm, h.nh3_ppm, h.ch4_pct_lel), self._gas, strict=True)
        )
        full = beyond(h.fill_max, th.full)
        fire = beyond(h.temp_c, th.fire)
        if rep:
            s.low_battery += sign * h.low_battery
            s.bins += sign * h.n_bins
            s.fill_sum += sign * _fx((h.fill_mean or 0.0) * h.n_bins)
            s.huts_full += sign * full
            s.gas_alarms += sign * gas
            s.fire_risk += sign * fire
            s.seepage += sign * bool(h.seepage)
            s.dropoffs += sign * h.dropoffs_today
        if rep:
            for category, kg in h.deposited_kg.items():
                acc = self.deposited.setdefault((d.district, category), [0, 0])
                acc[0] += sign * _fx(float(kg))
                acc[1] += sign
        flagged = (
            full
            or fire
            or bool(h.seepage)
            or gas
            or (h.n_bins > 0 and beyond(h.fill_mean, th.fill))
        )
        if flagged and sign > 0:
            self.beyond_huts.add(d.id)
            self.flag_epoch += 1
        else:
            self.beyond_huts.discard(d.id)

    def _count_meter(
        self, d: Dev, s: Sums, group: Group | None, sign: int, on: bool, rep: bool
    ) -> None:
        s.key_online += sign * (d.key and on)
        m: MeterRow | None = d.row
        if m is None:
            self.beyond_meters.discard(d.id)
            return
        th = self.th
        low_pf = beyond(m.power_factor, th.power_factor)
        volt = m.voltage_v is not None and not (th.voltage_low <= m.voltage_v <= th.voltage_high)
        if rep:
            s.load_kw += sign * _fx(m.active_power_kw or 0.0)
            s.adjustable_kw += sign * _fx(m.adjustable_kw or 0.0)
            s.consumption_kwh += sign * _fx(m.consumption_kwh or 0.0)
            s.low_pf += sign * low_pf
            s.voltage_dev += sign * volt
            if group is not None and m.active_power_kw is not None:
                group.load_kw += sign * _fx(m.active_power_kw)
                group.loads += sign
                self._regroup(group)
        if (low_pf or volt) and sign > 0:
            self.beyond_meters.add(d.id)
            self.flag_epoch += 1
        else:
            self.beyond_meters.discard(d.id)

    def _flagged_group(self, g: Group) -> bool:
        key = (g.district, g.site)
        return key in self.beyond_lots or key in self.beyond_sites or key in self.watched_groups

    def _regroup(self, g: Group) -> None:
        """A lot's near-full count and flag, an energy site's flag, after a change."""
        key = (g.district, g.site)
        if self._flagged_group(g):
            self.flag_epoch += 1
        if key in self.lots and self.lots[key] is g:
            occupancy = g.occupied / g.reporting if g.reporting else None
            near = occupancy is not None and occupancy >= self.th.lot_near_full
            if near != g.near_full:
                self._sums(g.district, "parking").lots_near_full += 1 if near else -1
                g.near_full = near
            if beyond(occupancy, self.occupancy):
                self.beyond_lots.add(key)
                self.flag_epoch += 1
            else:
                self.beyond_lots.discard(key)
            return
        contract = g.contract_kw if g.contracts and g.contract_kw != 0 else None
        share = g.load_kw / SCALE / contract if g.loads and contract else None
        if beyond(share, self.th.load_share):
            self.beyond_sites.add(key)
            self.flag_epoch += 1
        else:
            self.beyond_sites.discard(key)

    # -- passing time --------------------------------------------------------------

    def sweep(self, now: datetime) -> int:
        """Turn offline the devices whose online window has ended by `now`; how many."""
        now_us = micros(now)
        if now_us < self.swept_us:
            # The clock went back: devices may be online again. Count every one anew.
            return self._recount(now_us)
        self.swept_us = now_us
        now_s = now_us // US
        expired = 0
        while self._seconds and self._seconds[0] <= now_s:
            second = self._seconds[0]
            bucket = self._ending[second]
            keep: list[Dev] = []
            for d in bucket:
                if d.counted and d.expiry <= now_us:
                    self._count(d, -1)
                    d.counted = False
                    self._count(d, +1)
                    expired += 1
                elif d.counted and d.expiry // US == second:
                    keep.append(d)
            if keep:
                self._ending[second] = keep
                break
            heapq.heappop(self._seconds)
            del self._ending[second]
        return expired

    def _recount(self, now_us: int) -> int:
        changed = 0
        self._ending = {}
        self._seconds = []
        self.swept_us = now_us
        for d in self.devices.values():
            self._count(d, -1)
            was = d.counted
            d.counted = now_us < d.expiry
            changed += was != d.counted
            self._count(d, +1)
        return changed

    # -- serving -------------------------------------------------------------------

    def inputs(
        self,
        now: datetime,
        active: Iterable[ActiveAlert],
        ingest: list[IngestRow],
        *,
        flagged: bool = True,
    ) -> FastInputs:
        """The per-second snapshot's inputs, as `queries.fetch_fast` would read them.

        `flagged=False` leaves out the flagged entities (their checks are known: the
        caller saw `flag_epoch` stand still)."""
        self.sweep(now)
        totals: list[Totals] = []
        for (district, kind), s in self.sums.items():
            if s.registered <= 0:
                continue
            if s.stale_newest:
                times = [d.ts for d in s.members if d.counted and d.ts is not None]
                s.newest = max(times) if times else None
                s.stale_newest = False
            totals.append(_totals(district, kind, s))
        fast = FastInputs(
            lots=[],
            totals=totals,
            deposited=[(d, c, kg / SCALE) for (d, c), (kg, n) in self.deposited.items() if n > 0],
            huts=[],
            meters=[],
            site_loads=[],
            unassigned=self.unassigned,
            ingest=ingest,
        )
        if not flagged:
            return fast
        alerted: dict[str, set[str]] = {}
        for a in active:
            alerted.setdefault(a.indicator, set()).add(a.entity)
        watched_lots: set[tuple[str | None, str]] = set()
        if self.occupancy is not None:
            watched_lots = {
                self.lot_entities[e] for e in alerted.get(LOT_ALERT, ()) if e in self.lot_entities
            }
        lots = [self.lots[k].lot_row() for k in self.beyond_lots | watched_lots]
        watched: set[str] = set()
        for ind in (*HUT_ALERTS, *METER_ALERTS):
            watched.update(alerted.get(ind, ()))
        watched_sites = {
            self.site_entities[e] for e in alerted.get(SITE_ALERT, ()) if e in self.site_entities
        }
        self.watched = watched
        self.watched_groups = watched_lots | watched_sites
        sites = self.beyond_sites | watched_sites
        return replace(
            fast,
            lots=[r for r in lots if r.reporting],
            huts=self._flagged(self.beyond_huts | watched, "waste"),
            meters=self._flagged(self.beyond_meters | watched, "energy"),
            site_loads=[r for k in sites if (r := self.sites[k].load_row()) is not None],
        )

    def windowed(self, slow: SlowInputs) -> SlowInputs:
        """`slow` with the windowed figures of the devices online now: turnover's
        transitions and completeness's (received, expected), as `queries.fetch_slow`
        reads them from scratch."""
        transitions: dict[str | None, int] = {}
        completeness: dict[str | None, tuple[int, int]] = {}
        for (district, kind), s in self.sums.items():
            if kind == "parking" and s.transitions:
                transitions[district] = s.transitions
            if s.expected:
                got, expected = completeness.get(district, (0, 0))
                completeness[district] = (got + s.received, expected + s.expected)
        return replace(slow, transitions=transitions, completeness=completeness)

    def _flagged(self, ids: Iterable[str], kind: str) -> list[Any]:
        rows = []
        for device_id in ids:
            d = self.devices.get(device_id)
            # Rows are made `online` (only counted devices' are served).
            if d is not None and d.kind == kind and d.counted and d.row is not None:
                rows.append(d.row)
        return rows


def _totals(district: str | None, kind: str, s: Sums) -> Totals:
    max_iv = max(s.ivs) if s.ivs else 0
    if kind == "parking":
        return parking_totals(
            district,
            s.registered,
            s.online,
            s.reporting,
            s.occupied,
            s.low_battery,
            s.newest,
            max_iv,
            s.lots_near_full,
        )
    return Totals(
        district=district,
        kind=kind,
        registered=s.registered,
        online=s.online,
        reporting=s.reporting,
        newest=s.newest,
        max_iv=max_iv,
        low_battery=s.low_battery,
        bins=s.bins,
        fill_sum=s.fill_sum / SCALE,
        huts_full=s.huts_full,
        gas_alarms=s.gas_alarms,
        fire_risk=s.fire_risk,
        seepage=s.seepage,
        dropoffs=s.dropoffs,
        load_kw=s.load_kw / SCALE,
        adjustable_kw=s.adjustable_kw / SCALE,
        consumption_kwh=s.consumption_kwh / SCALE,
        low_pf=s.low_pf,
        voltage_dev=s.voltage_dev,
        key_registered=s.key_registered,
        key_online=s.key_online,
        occupied=0,
        lots_near_full=0,
    )
