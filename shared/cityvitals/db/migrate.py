"""Run the Alembic migrations and record what storage the database offers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError as SAOperationalError

from cityvitals.db import timescale
from cityvitals.db.engine import libpq_url, sqlalchemy_url
from cityvitals.settings import MigrateSettings
from cityvitals.startup import StartupError, check_database

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `migrate` runs (several containers starting at once).
MIGRATE_LOCK_KEY = 0x43_56_4D_49  # "CVMI"


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What `migrate` did."""

    revision: str
    storage: str


def _config(conn: Connection, use_timescale: bool, options: timescale.TimescaleOptions) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    cfg.attributes["use_timescale"] = use_timescale
    cfg.attributes["timescale_options"] = options
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision a database is at, or None when it was never migrated."""
    return MigrationContext.configure(conn).get_current_revision()


def _choose_timescale(conn: Connection, mode: str) -> bool:
    """Apply CITYVITALS_TIMESCALE: `auto` falls back with a warning, `on` refuses."""
    if mode == "off":
        return False
    state = timescale.availability(conn)
    if state == "ready":
        return timescale.enable_extension(conn)
    if state == "not_preloaded":
        if mode == "on":
            raise StartupError(
                "CITYVITALS_TIMESCALE=on but TimescaleDB is installed and not preloaded",
                timescale.PRELOAD_FIX,
            )
        log.warning(
            "TimescaleDB is installed but not preloaded; using plain PostgreSQL. To use "
            f"it: {timescale.PRELOAD_FIX}, then run migrate on a new database"
        )
        return False
    if mode == "on":
        raise StartupError(
            "CITYVITALS_TIMESCALE=on but the server has no timescaledb extension",
            "install TimescaleDB for this PostgreSQL or set CITYVITALS_TIMESCALE=auto",
        )
    return False


def _check_intervals(settings: MigrateSettings) -> None:
    """The TimescaleDB policy settings must be PostgreSQL intervals; the server says."""
    with psycopg.connect(libpq_url(settings.database_url), connect_timeout=5) as conn:
        for name in ("chunk_interval", "compress_after", "retain_raw", "retain_rollups"):
            value = getattr(settings, name)
            try:
                conn.execute("SELECT %s::interval", (value,))
            except psycopg.errors.DataError:
                conn.rollback()
                raise StartupError(
                    f"CITYVITALS_{name.upper()}={value!r} is not a PostgreSQL interval",
                    "use an interval such as '1 day' or '90 days'",
                ) from None


def run_migrations(settings: MigrateSettings, target: str = "head") -> MigrationResult:
    """Bring the database to the newest schema; safe to run again and concurrently.

    `target` names an older revision to stop at instead (tests of an upgrade use it).

    Raises StartupError (one line for the operator) when the database cannot be
    reached or refuses the login, or when CITYVITALS_TIMESCALE cannot be honoured.
    """
    check_database(libpq_url(settings.database_url))
    _check_intervals(settings)
    try:
        return _run_migrations(settings, target)
    except SAOperationalError as err:
        raise StartupError(
            f"the database failed during the migration ({str(err.orig).strip()[:200]})",
            "check that the server is up and run migrate again",
        ) from None


def _run_migrations(settings: MigrateSettings, target: str) -> MigrationResult:
    engine = create_engine(sqlalchemy_url(settings.database_url))
    options = timescale.TimescaleOptions(
        chunk_interval=settings.chunk_interval,
        compress_after=settings.compress_after,
        retain_raw=settings.retain_raw,
        retain_rollups=settings.retain_rollups,
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
            conn.commit()
            try:
                use_ts = _choose_timescale(conn, settings.timescale)
                conn.commit()
                previous = current_revision(conn)
                if previous is not None:
                    stored = conn.execute(
                        text("SELECT value FROM schema_info WHERE key = 'storage'")
                    ).scalar()
                    if stored == "timescaledb" and not use_ts and settings.timescale != "off":
                        raise StartupError(
                            "this database was migrated for TimescaleDB, which the server "
                            "does not load now",
                            timescale.PRELOAD_FIX,
                        )
                    use_ts = stored == "timescaledb"
                conn.commit()
                command.upgrade(_config(conn, use_ts, options), target)
                storage = "timescaledb" if use_ts else "postgresql"
                conn.commit()
                conn.execute(
                    text(
                        "INSERT INTO schema_info (key, value) VALUES ('storage', :s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    ),
                    {"s": storage},
                )
                revision = current_revision(conn) or "none"
                conn.commit()
                log.info("migrated", revision=revision, previous=previous, storage=storage)
                return MigrationResult(revision=revision, storage=storage)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
