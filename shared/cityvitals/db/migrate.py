"""Run the Alembic migrations and record what storage the database offers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text

from cityvitals.db import timescale
from cityvitals.db.engine import sqlalchemy_url
from cityvitals.settings import MigrateSettings

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


def run_migrations(settings: MigrateSettings, target: str = "head") -> MigrationResult:
    """Bring the database to the newest schema; safe to run again and concurrently.

    `target` names an older revision to stop at instead (tests of an upgrade use it).
    """
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
                use_ts = False
                if settings.timescale != "off":
                    use_ts = timescale.enable_extension(conn)
                    conn.commit()
                    if settings.timescale == "on" and not use_ts:
                        raise RuntimeError(
                            "CITYVITALS_TIMESCALE=on but the server has no timescaledb extension"
                        )
                previous = current_revision(conn)
                if previous is not None:
                    stored = conn.execute(
                        text("SELECT value FROM schema_info WHERE key = 'storage'")
                    ).scalar()
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
