"""The shared snapshot: computed in the background, served to every request as bytes.

One task refreshes the snapshot at most every `snapshot_interval_s`, and today's peak
load and the hourly rollup every `slow_refresh_interval_s`. The city snapshot is built
from the city's state the API keeps in memory (`fleet.Fleet`): each refresh folds in
only what changed since the previous one (the change log, and the devices whose online
window ended), so its cost follows the changes, not the fleet. The windowed figures
(24 h turnover, the last hour's completeness) are kept there per device too, and read
again for every device only when their window moves on (every 10 minutes).
`/v1/vitals` never queries: it gets the pre-serialized document of the newest snapshot.
A district's drill-down (its sites, row by row) is built on the first request after
each refresh and then served from memory. When the database is away the last
snapshot keeps being served, marked stale, and `/readyz` says 503.

In the running service the database reads, the folding, the computation and the
serialization run on a `Worker`: a thread with its own event loop and connection pool.
Converting a few thousand rows takes tens of milliseconds of interpreter time; on the
loop that answers the screens that would be tens of milliseconds of latency for every
request arriving meanwhile, while on another thread it only shares the interpreter in
1 ms slices (`sys.setswitchinterval` in `main.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import structlog
from psycopg_pool import AsyncConnectionPool

from cityvitals.api import queries
from cityvitals.api.alerts import AlertBook
from cityvitals.api.compute import (
    CITY,
    Config,
    EntityCheck,
    Flagged,
    FlaggedState,
    Site,
    Snapshot,
    build_fast_snapshot,
    build_snapshot,
    empty_snapshot,
    entity_thresholds,
)
from cityvitals.api.documents import Served, district_doc, vitals_doc
from cityvitals.api.fleet import Fleet, SyncResult
from cityvitals.catalogue import Indicator
from cityvitals.timeutil import local_day, local_midnight

log = structlog.get_logger("cityvitals.api")

Clock = Callable[[], datetime]
# Faults a refresh meets when the database is away; anything else is a bug and logged.
DB_FAULTS: tuple[type[BaseException], ...] = (
    psycopg.Error,
    psycopg_pool.PoolTimeout,
    OSError,
    TimeoutError,
)
# How long a refresh waits for a pooled connection before calling the database down.
CONNECT_TIMEOUT_S = 3.0
# How far back the plain-PostgreSQL hourly rollup is recomputed at each slow refresh.
ROLLUP_LOOKBACK = timedelta(hours=2)

T = TypeVar("T")
PoolFactory = Callable[[], AsyncConnectionPool[Any]]


class Worker:
    """A thread running its own event loop, with its own connection pool."""

    def __init__(self, make_pool: PoolFactory) -> None:
        self._make_pool = make_pool
        self.loop = asyncio.new_event_loop()
        self.pool: AsyncConnectionPool[Any] | None = None
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="snapshot-worker", daemon=True
        )

    async def start(self) -> None:
        """Start the thread and open the pool (without waiting for the database)."""
        self._thread.start()
        await self.run(self._open())

    async def _open(self) -> None:
        self.pool = self._make_pool()
        await self.pool.open(wait=False)

    async def _shutdown(self) -> None:
        # A refresh cancelled on the caller's side is cancelled here by a callback;
        # let every such task end before the loop stops, then close the pool. The
        # pool's own scheduler and workers (tasks named after the pool) are the pool's
        # to end: cancelled from here, its close() would raise CancelledError.
        own = f"{self.pool.name}-" if self.pool is not None else None
        tasks = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and not (own and t.get_name().startswith(own))
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pool is not None:
            # With the database away, the pool's scheduler may end cancelled inside its
            # own timed wait; its close() then re-raises that, though nothing of ours
            # was cancelled. The pool is closed either way.
            with contextlib.suppress(asyncio.CancelledError):
                await self.pool.close()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the worker's loop and wait for it from the caller's."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def stop(self) -> None:
        """Finish what runs on the worker, close the pool and stop the thread."""
        with contextlib.suppress(Exception):
            await self.run(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self.loop.close()


class Engine:
    """Owns the current snapshot, its documents, alerts and indicator samples."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any] | None,
        cfg: Config,
        local_tz: str,
        clock: Clock,
        snapshot_interval_s: float,
        slow_interval_s: float,
        rollup: Callable[[datetime], None] | None = None,
    ) -> None:
        self.pool = pool
        self.cfg = cfg
        self.catalogue: dict[str, Indicator] = dict(cfg.catalogue)
        self.entity_th = entity_thresholds(cfg.catalogue)
        # The city's state in memory, folded from what changed at each refresh.
        self.fleet = Fleet(
            self.entity_th, cfg.catalogue["parking.occupancy_ratio"].thresholds, now=clock()
        )
        self.last_sync: SyncResult | None = None
        # What the served snapshot was built from (minute, slow figures, ingest rows).
        self._inputs_of: tuple[datetime, queries.SlowInputs, list[Any]] | None = None
        # The flagged entities' part of the last snapshot, and what it was built at
        # (the city state's `flag_epoch`, the alerts' version, the minute).
        self._flagged: tuple[tuple[int, int | None, datetime], Flagged] | None = None
        self.flagged = FlaggedState()
        self.local_tz = local_tz
        self.clock = clock
        self.snapshot_interval_s = snapshot_interval_s
        self.slow_interval_s = slow_interval_s
        self.rollup = rollup
        self.alerts = AlertBook()
        # What the served snapshot was built from: the windowed figures of the city
        # state, and the day's peak loads (read every `slow_interval_s`).
        self.slow = queries.SlowInputs()
        self._peaks = queries.SlowInputs()
        now = clock()
        self.snapshot: Snapshot = empty_snapshot(cfg, now)
        self.has_data = False
        self.db_up = False
        self.refreshed_mono: float | None = None
        self.last_refresh_s = 0.0
        # Called with each successful refresh's duration (the metrics histogram).
        self.on_refresh: Callable[[float], None] | None = None
        self._lock = asyncio.Lock()
        self._slow_due_mono = 0.0
        self._docs: dict[str, Served] = {}
        # District drill-downs of the current snapshot (built or being built), and each
        # district's newest sites (served, marked stale, while the database is away).
        self._districts: dict[str, asyncio.Future[Served]] = {}
        self._sites: dict[str, tuple[Site, ...]] = {}
        self._degraded = True
        self._served_at = now
        self._sampled_minute: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.worker: Worker | None = None
        self._publish(now)

    # -- serving -------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True when the served snapshot is not fresh from the database."""
        return self._degraded

    def age_s(self) -> float:
        """Seconds since the served snapshot was computed."""
        return max(0.0, (self.clock() - self.snapshot.computed_at).total_seconds())

    def _publish(self, now: datetime) -> None:
        self._degraded = not self.db_up or not self.has_data
        self._served_at = now
        self._docs = {}
        self._districts = {}

    def document(self) -> Served:
        """The city document (`/v1/vitals`), serialized once per snapshot."""
        served = self._docs.get("vitals")
        if served is None:
            doc = vitals_doc(
                self.snapshot, self.catalogue, self._served_at, degraded=self._degraded
            )
            served = self._docs["vitals"] = Served.of(doc)
        return served

    async def district_document(self, district: str) -> Served:
        """One district with its sites, built once per snapshot on the first request."""
        building = self._districts.get(district)
        failed = (
            building is not None
            and building.done()
            and (building.cancelled() or building.exception() is not None)
        )
        if building is None or failed:
            building = asyncio.ensure_future(self._build_district(district))
            self._districts[district] = building
        # Shielded: a client that goes away does not cancel the others' document.
        return await asyncio.shield(building)

    async def _build_district(self, district: str) -> Served:
        snap, now, degraded, slow = self.snapshot, self._served_at, self._degraded, self.slow
        sites = self._sites.get(district, ())
        if not degraded:
            try:
                sites = await self._on_worker(
                    lambda pool: self._fetch_sites(pool, snap.computed_at, district, slow)
                )
            except DB_FAULTS as err:
                log.warning("district sites unavailable", district=district, error=str(err))
                degraded = True
            else:
                self._sites[district] = sites

        async def serialize(_pool: AsyncConnectionPool[Any] | None) -> Served:
            return Served.of(
                district_doc(snap, district, sites, self.catalogue, now, degraded=degraded)
            )

        return await self._on_worker(serialize)

    async def _fetch_sites(
        self,
        pool: AsyncConnectionPool[Any] | None,
        at: datetime,
        district: str,
        slow: queries.SlowInputs,
    ) -> tuple[Site, ...]:
        """A district's sites at the snapshot's instant, entity by entity."""
        if pool is None:
            raise psycopg.OperationalError("no database pool")
        async with pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
            rows = await queries.fetch_entities(
                conn, **self._day(at), district=district, th=self.entity_th
            )
        return build_snapshot(rows, slow, cfg=self.cfg, now=at).sites.get(district, ())

    async def _on_worker(self, job: Callable[[AsyncConnectionPool[Any] | None], Awaitable[T]]) -> T:
        """Run `job(pool)` on the worker (or, without one, here with the main pool)."""
        if self.worker is None:
            return await job(self.pool)
        worker = self.worker

        async def wrapped() -> T:
            return await job(worker.pool)

        return await worker.run(wrapped())

    def _day(self, now: datetime) -> dict[str, Any]:
        midnight = local_midnight(now, self.local_tz)
        return {
            "now": now,
            "day": local_day(now, self.local_tz),
            "midnight": midnight,
            "next_midnight": local_midnight(midnight + timedelta(hours=26), self.local_tz),
        }

    # -- refreshing ----------------------------------------------------------------

    async def refresh(self, *, slow: bool = False) -> bool:
        """Compute one snapshot (and the slow figures when asked); False when the DB failed."""
        async with self._lock:
            return await self._refresh(slow=slow)

    async def _refresh(self, *, slow: bool) -> bool:
        now = self.clock()
        started = time.perf_counter()
        try:
            snap, slow_inputs, ready = await self._on_worker(
                lambda pool: self._compute(pool, now, slow=slow)
            )
        except DB_FAULTS as err:
            if self.db_up:
                log.warning("database unavailable, serving the last snapshot", error=str(err))
            self.db_up = False
            self._publish(now)
            return False
        self.snapshot = snap
        self.slow = slow_inputs
        self.db_up = True
        self.has_data = True
        self.refreshed_mono = time.monotonic()
        self.last_refresh_s = time.perf_counter() - started
        if self.on_refresh is not None:
            self.on_refresh(self.last_refresh_s)
        self._publish(now)
        self._docs["vitals"] = ready
        return True

    async def _compute(
        self, pool: AsyncConnectionPool[Any] | None, now: datetime, *, slow: bool
    ) -> tuple[Snapshot, queries.SlowInputs, Served]:
        """One snapshot with its alerts, samples and city document, ready to serve."""
        if pool is None:
            raise psycopg.OperationalError("no database pool")
        async with pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
            day = self._day(now)
            peaks = self._peaks
            if slow or peaks.day != day["day"]:
                peaks = await queries.fetch_peaks(
                    conn, now=now, day=day["day"], midnight=day["midnight"]
                )
            started = time.perf_counter()
            synced = await self.fleet.sync(conn, **day)
            took = round(time.perf_counter() - started, 3)
            if synced.reloaded:
                # Millions of long-lived objects: out of the cyclic collector's sight,
                # or each full collection would walk them all (a pause for the screens).
                gc.freeze()
                log.info("city state loaded", devices=synced.devices, seconds=took)
            elif synced.rewindowed:
                log.info("windowed figures read again", devices=synced.rewindowed, seconds=took)
            self.last_sync = synced
            ingest = await queries.fetch_ingest(conn, now)
            minute = now.replace(second=0, microsecond=0)
            unchanged = self._inputs_of is not None and (
                not synced.reloaded
                and not synced.devices
                and not synced.expired
                and not synced.rewindowed
                and self._inputs_of[0] == minute
                and self._inputs_of[1] is peaks
                and self._inputs_of[2] == ingest
                and self.has_data
            )
            if unchanged:
                # Nothing changed: the same figures and checks (the alerts have seen
                # them), only newer. A quiet city costs this, whatever its size.
                snap = replace(self.snapshot, computed_at=now)
                slow_inputs = self.slow
            else:
                active = await self.alerts.current(conn)
                # The flagged entities' checks are the last ones while none of those
                # entities changed and neither did the active alerts (and at least once
                # a minute, for another process's alert changes): then there is nothing
                # new for the alerts either.
                key = (self.fleet.flag_epoch, self.alerts.version, minute)
                last = self._flagged
                again = last is not None and last[0] == key
                fast = self.fleet.inputs(now, active, ingest, flagged=not again)
                changed: list[EntityCheck] = []
                if last is not None and again:
                    flagged = last[1]
                else:
                    flagged, changed = self.flagged.update(fast, cfg=self.cfg, now=now)
                slow_inputs = self.fleet.windowed(peaks)
                snap = build_fast_snapshot(
                    fast, slow_inputs, cfg=self.cfg, now=now, flagged=flagged
                )
                if not again:
                    # Every check once a minute (another process may have changed the
                    # alerts); in between only the entities checked anew: an unchanged
                    # check against an unchanged alert has nothing left to do.
                    if last is None or last[0][2] != minute:
                        await self.alerts.evaluate(conn, snap.checks, now)
                    else:
                        await self.alerts.evaluate(conn, changed, now, partial=True)
                    self._flagged = (key, flagged)
            self._peaks = await self._sample(conn, snap, now, peaks)
            self._inputs_of = (minute, self._peaks, ingest)
            slow_inputs = replace(slow_inputs, peaks=self._peaks.peaks)
        ready = Served.of(vitals_doc(snap, self.catalogue, now, degraded=False))
        ready.gzipped()
        return snap, slow_inputs, ready

    async def _sample(
        self, conn: Any, snap: Snapshot, now: datetime, slow: queries.SlowInputs
    ) -> queries.SlowInputs:
        """Write every city and district figure once a minute (for series and peaks)."""
        minute = now.replace(second=0, microsecond=0)
        if self._sampled_minute == minute:
            return slow
        rows: list[tuple[str, str, datetime, float | None]] = []
        for scope in (snap.city, *snap.districts.values()):
            rows.extend((f.id, scope.id, minute, f.value) for f in scope.figures)
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO indicator_samples (indicator, scope, ts, value) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )
        self._sampled_minute = minute
        peaks = dict(slow.peaks or {})
        for scope in (snap.city, *snap.districts.values()):
            load = scope.figure("energy.load_kw").value
            if load is not None and (scope.id not in peaks or load > peaks[scope.id]):
                peaks[scope.id] = load
        return queries.SlowInputs(
            day=slow.day,
            transitions=slow.transitions,
            completeness=slow.completeness,
            peaks=peaks,
        )

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            slow = started >= self._slow_due_mono
            try:
                ok = await self.refresh(slow=slow)
                if slow and ok:
                    self._slow_due_mono = started + self.slow_interval_s
                    if self.rollup is not None:
                        await asyncio.to_thread(self.rollup, self.clock() - ROLLUP_LOOKBACK)
            except DB_FAULTS as err:
                log.warning("rollup refresh failed", error=str(err))
            except Exception:
                # A bug in one refresh must not stop the screens being served.
                log.exception("snapshot refresh failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.snapshot_interval_s - elapsed))

    async def start_worker(self, make_pool: PoolFactory) -> None:
        """Move the database work to a `Worker` with a pool from `make_pool` (two
        connections: the refreshes, the district drill-downs)."""
        worker = Worker(make_pool)
        await worker.start()
        self.worker = worker

    def start(self) -> None:
        """Start the background refresh task."""
        self._tasks = [asyncio.create_task(self._run(), name="snapshot-refresh")]

    async def stop(self) -> None:
        """Cancel the background tasks, wait for them, stop the worker."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.worker is not None:
            worker, self.worker = self.worker, None
            await worker.stop()


__all__ = ["CITY", "Clock", "Engine"]
