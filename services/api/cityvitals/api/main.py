"""The City Vitals API: FastAPI app factory and `run(settings)` for `cityvitals api`."""

from __future__ import annotations

import asyncio
import errno
import gc
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import psycopg_pool
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityvitals.api.compute import Config
from cityvitals.api.engine import Engine
from cityvitals.api.metrics import HttpMetricsMiddleware, Metrics
from cityvitals.api.routes import alerts, dead_letters, devices, health, series, vitals
from cityvitals.catalogue import with_overrides
from cityvitals.settings import ApiSettings
from cityvitals.timeutil import utcnow

log = structlog.get_logger("cityvitals.api")
STATIC_DIR = Path(__file__).parent / "static"
# Every statement of the API is a bounded aggregate or a keyed lookup; one that runs
# longer than this is a fault to report, not to wait for.
STATEMENT_TIMEOUT_MS = 15000
# The snapshot worker's connections: one for the refreshes (which read only what
# changed), one for the district drill-downs.
SNAPSHOT_CONNECTIONS = 2
# Young-generation collections between two full ones (CPython's default is 10).
GC_FULL_EVERY = 1000
DESCRIPTION = """
City vital signs (城市生命体征) for the operations centre: parking, waste huts, energy
and the devices behind them, per city, district and site.

Read endpoints are open; writes need `Authorization: Bearer <CITYVITALS_ADMIN_TOKEN>`
(401 without it, 403 with a wrong one or when none is configured). `/v1/vitals` is a
pre-computed snapshot refreshed every second: poll it with `If-None-Match`.
"""


class BodyLimitMiddleware:
    """413 for request bodies over `max_body_bytes`, by header or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject or pass one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """Raised inside `receive` when the streamed body passes the limit."""


def _configure_connection() -> Callable[[psycopg.AsyncConnection[Any]], Any]:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        await conn.execute("SET application_name = 'cityvitals-api'")
        # The snapshot's joins over the whole fleet fit in memory instead of spilling,
        # and stay on one core: parallel workers would take the other from the server
        # answering the screens.
        await conn.execute("SET work_mem = '64MB'")
        await conn.execute("SET max_parallel_workers_per_gather = 0")

    return configure


def _rollup_refresher(settings: ApiSettings) -> Callable[[datetime], None] | None:
    """On plain PostgreSQL, the hourly rollup is a table the API refreshes."""
    try:
        from cityvitals.db import plain
    except ImportError:
        return None
    refresh = getattr(plain, "refresh_rollup", None)
    if refresh is None:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from cityvitals.db.engine import sqlalchemy_url

    sa_engine = create_engine(
        sqlalchemy_url(settings.database_url), pool_size=1, max_overflow=0, pool_pre_ping=True
    )

    def run(since: datetime) -> None:
        try:
            with sa_engine.begin() as conn:
                storage = conn.execute(
                    text("SELECT value FROM schema_info WHERE key = 'storage'")
                ).scalar()
                exists = conn.execute(text("SELECT to_regclass('indicator_samples_1h')")).scalar()
                if storage == "postgresql" and exists is not None:
                    refresh(conn, since=since)
        except SQLAlchemyError as err:
            log.warning("rollup refresh failed", error=str(err)[:200])

    return run


def create_app(
    settings: ApiSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    background: bool = True,
) -> FastAPI:
    """The app; `clock` and `background=False` let tests drive refreshes themselves."""
    settings = settings or ApiSettings()
    cfg = Config(
        catalogue=with_overrides(settings.thresholds_file),
        co2_kg_per_kwh=settings.co2_kg_per_kwh,
    )

    engine = Engine(
        pool=None,
        cfg=cfg,
        local_tz=settings.local_tz,
        clock=clock,
        snapshot_interval_s=settings.snapshot_interval_s,
        slow_interval_s=settings.slow_refresh_interval_s,
    )
    metrics = Metrics(engine)

    def make_pool(name: str, max_size: int) -> AsyncConnectionPool[Any]:
        return AsyncConnectionPool(
            settings.psycopg_dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            configure=_configure_connection(),
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": 5},
            # A request waits this long for a connection, then answers 503.
            timeout=5.0,
            name=name,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = make_pool("cityvitals-api", settings.pool_max)
        # wait=False: the API starts (and serves a stale, empty snapshot) while the
        # database is still away; the pool keeps trying in the background.
        await pool.open(wait=False)
        engine.pool = pool
        app.state.pool = pool
        if background:
            engine.rollup = _rollup_refresher(settings)
            await engine.start_worker(
                lambda: make_pool("cityvitals-api-snapshot", SNAPSHOT_CONNECTIONS)
            )
            # Shielded: a first load of a large city that takes longer goes on (and the
            # background refreshes wait for it) instead of starting again from nothing.
            first = asyncio.ensure_future(engine.refresh(slow=True))
            try:
                await asyncio.wait_for(asyncio.shield(first), timeout=10)
            except TimeoutError:
                log.warning("first snapshot took over 10 s; serving an empty one meanwhile")
            engine.start()
            # What exists now lives as long as the process (the framework, the routes,
            # the catalogue): frozen, a full collection no longer walks it.
            gc.collect()
            gc.freeze()
        log.info("api started", host=settings.api_host, port=settings.api_port)
        try:
            yield
        finally:
            await engine.stop()
            engine.pool = None
            await pool.close()

    app = FastAPI(
        title="City Vitals API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.engine = engine
    app.state.metrics = metrics

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg_pool.PoolTimeout)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"}
        )

    for module in (vitals, alerts, devices, series, dead_letters, health):
        app.include_router(module.router)
    # After every API route, so that the screen never shadows one.
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="screen")

    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(settings: ApiSettings) -> int:
    """Serve on `api_host:api_port` with one uvicorn worker until SIGTERM; the exit code.

    Start-up mistakes raise StartupError (docs/running.md, "When it cannot start"): the
    port taken or not ours to listen on, a database that refuses the login or does not
    exist. A database that is only away is an outage: one warning line, and the API
    serves meanwhile (`/readyz` answers 503 until it is back).
    """
    import logging

    from cityvitals.startup import OneLineRepeats, StartupError, check_database, is_transient

    try:
        with_overrides(settings.thresholds_file)
    except ValueError as err:
        raise StartupError(
            f"bad thresholds file: {err}", "fix CITYVITALS_THRESHOLDS_FILE (docs/indicators.md)"
        ) from None
    where = f"{settings.api_host}:{settings.api_port}"
    try:
        sock = _bind(settings.api_host, settings.api_port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {where} is already in use by another process",
                "stop that process or set CITYVITALS_API_PORT to a free port",
            ) from None
        raise StartupError(
            f"cannot listen on {where} ({err.strerror or err})",
            "set CITYVITALS_API_HOST to an address of this machine and "
            "CITYVITALS_API_PORT to a port this user may open",
        ) from None
    try:
        check_database(settings.psycopg_dsn)
    except StartupError as err:
        if not is_transient(err):
            sock.close()
            raise
        log.warning(
            "database_unreachable",
            detail=f"{err.what}: {err.fix}",
            serving=True,
            hint="/readyz answers 503 until the database is back",
        )
    # The pools retry an absent database with libpq's multi-line message on every
    # attempt; one line each, and not again for five minutes.
    logging.getLogger("psycopg.pool").addFilter(OneLineRepeats())
    config = uvicorn.Config(
        create_app(settings),
        workers=1,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Screens poll every few seconds on one connection; uvicorn's default of 5 s
        # would race their next request against the server closing it.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    # The snapshot is computed on a worker thread; a short GIL switch interval keeps the
    # event loop answering within a millisecond or two while it runs (engine.Worker).
    sys.setswitchinterval(0.001)
    # A full (generation 2) collection stops every thread for 25-60 ms at 200,000
    # devices (measured with gc.callbacks) and used to run every few refreshes; the
    # young generations, which catch almost all cycles, keep their default pace.
    gc.set_threshold(700, 10, GC_FULL_EVERY)
    # uvicorn re-raises the signal that stopped it once it has shut down; with these
    # no-op handlers in place that re-raise lands here, and a graceful stop exits 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("api stopped")
    return 0 if server.started else 1


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Swallow the stop signal uvicorn re-raises after its graceful shutdown."""
