"""The shared snapshot: computed in the background, served to every request as bytes.

One task refreshes the snapshot at most every `snapshot_interval_s`; another refreshes
the slower figures (24 h turnover, completeness, today's peak, the hourly rollup)
every `slow_refresh_interval_s`. Requests never query for vital signs: they get the
pre-serialized document of the newest snapshot. When the database is away the last
snapshot keeps being served, marked stale, and `/readyz` says 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
import structlog
from psycopg_pool import AsyncConnectionPool

from cityvitals.api import queries
from cityvitals.api.alerts import AlertBook
from cityvitals.api.compute import CITY, Config, Snapshot, build_snapshot, empty_snapshot
from cityvitals.api.documents import Served, district_doc, vitals_doc
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
        self.local_tz = local_tz
        self.clock = clock
        self.snapshot_interval_s = snapshot_interval_s
        self.slow_interval_s = slow_interval_s
        self.rollup = rollup
        self.alerts = AlertBook()
        self.slow = queries.SlowInputs()
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
        self._degraded = True
        self._served_at = now
        self._sampled_minute: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
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

    def document(self, key: str) -> Served:
        """`vitals` or `district:<id>`, serialized once per snapshot on first request."""
        served = self._docs.get(key)
        if served is None:
            if key == "vitals":
                doc = vitals_doc(
                    self.snapshot, self.catalogue, self._served_at, degraded=self._degraded
                )
            else:
                doc = district_doc(
                    self.snapshot,
                    key.split(":", 1)[1],
                    self.catalogue,
                    self._served_at,
                    degraded=self._degraded,
                )
            served = self._docs[key] = Served.of(doc)
        return served

    # -- refreshing ----------------------------------------------------------------

    async def refresh(self, *, slow: bool = False) -> bool:
        """Compute one snapshot (and the slow figures when asked); False when the DB failed."""
        async with self._lock:
            return await self._refresh(slow=slow)

    async def _refresh(self, *, slow: bool) -> bool:
        now = self.clock()
        started = time.perf_counter()
        try:
            if self.pool is None:
                raise psycopg.OperationalError("no database pool")
            async with self.pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                day = local_day(now, self.local_tz)
                midnight = local_midnight(now, self.local_tz)
                next_midnight = local_midnight(midnight + timedelta(hours=26), self.local_tz)
                if slow or self.slow.day != day:
                    self.slow = await queries.fetch_slow(conn, now=now, day=day, midnight=midnight)
                fast = await queries.fetch_fast(
                    conn, now=now, day=day, midnight=midnight, next_midnight=next_midnight
                )
                # CPU-bound work runs off the event loop, so that screens polling the
                # cached document are not held up while a new one is computed.
                snap = await asyncio.to_thread(
                    build_snapshot, fast, self.slow, cfg=self.cfg, now=now
                )
                await self.alerts.evaluate(conn, snap.checks, now)
                await self._sample(conn, snap, now)
        except DB_FAULTS as err:
            if self.db_up:
                log.warning("database unavailable, serving the last snapshot", error=str(err))
            self.db_up = False
            self._publish(now)
            return False
        self.snapshot = snap
        self.db_up = True
        self.has_data = True
        self.refreshed_mono = time.monotonic()
        self.last_refresh_s = time.perf_counter() - started
        if self.on_refresh is not None:
            self.on_refresh(self.last_refresh_s)
        ready = await asyncio.to_thread(self._prepare, snap, now)
        self._publish(now)
        self._docs["vitals"] = ready
        return True

    def _prepare(self, snap: Snapshot, now: datetime) -> Served:
        """The city document of a new snapshot, serialized and compressed in advance."""
        served = Served.of(vitals_doc(snap, self.catalogue, now, degraded=False))
        served.gzipped()
        return served

    async def _sample(self, conn: Any, snap: Snapshot, now: datetime) -> None:
        """Write every city and district figure once a minute (for series and peaks)."""
        minute = now.replace(second=0, microsecond=0)
        if self._sampled_minute == minute:
            return
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
        peaks = dict(self.slow.peaks or {})
        for scope in (snap.city, *snap.districts.values()):
            load = scope.figure("energy.load_kw").value
            if load is not None and (scope.id not in peaks or load > peaks[scope.id]):
                peaks[scope.id] = load
        self.slow = queries.SlowInputs(
            day=self.slow.day,
            transitions=self.slow.transitions,
            completeness=self.slow.completeness,
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

    def start(self) -> None:
        """Start the background refresh task."""
        self._tasks = [asyncio.create_task(self._run(), name="snapshot-refresh")]

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


__all__ = ["CITY", "Clock", "Engine"]
