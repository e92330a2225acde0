"""The TimescaleDB path at run time: whether the server has it, and what migrate chose.

The statements that make the hypertables, their policies and the hourly continuous
aggregate are history: revision 0002 (`migrations/versions/0002_time_series.py`) holds
them as they ran, each with the TimescaleDB documentation page it follows. This module
keeps what the services and `cityvitals.db.migrate` need: the extension's availability,
the migrate settings, the storage path recorded, and which tables hold time series (for
the plain path's `prune`). Target: TimescaleDB 2.17 or later on PostgreSQL 16. See
docs/storage.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text

Storage = Literal["timescaledb", "postgresql"]
# What `cityvitals migrate` recorded; services that hold a psycopg pool run this query.
STORAGE_QUERY = "SELECT value FROM schema_info WHERE key = 'storage'"


@dataclass(frozen=True, slots=True)
class TimescaleOptions:
    """Policy intervals, as PostgreSQL interval literals; revision 0002 reads them."""

    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retain_raw: str = "90 days"
    retain_rollups: str = "2 years"


@dataclass(frozen=True, slots=True)
class Series:
    """A table kept as a hypertable on its time column on TimescaleDB."""

    table: str
    time_column: str
    # Which retention setting drops its old rows: CITYVITALS_RETAIN_RAW or _ROLLUPS.
    retention: Literal["raw", "rollups"]


# The hypertables revision 0002 made, with their retention policies; on plain
# PostgreSQL `plain.prune` deletes from the same tables. `events` and `dead_letters`
# stay plain tables: their unique keys do not include time.
SERIES = (
    Series("readings_parking", "ts", "raw"),
    Series("readings_waste", "ts", "raw"),
    Series("readings_energy", "ts", "raw"),
    Series("indicator_samples", "ts", "raw"),
    Series("seq_10m", "bucket", "raw"),
    Series("parking_hourly", "hour", "rollups"),
    Series("ingest_minutely", "minute", "rollups"),
)

# The hourly rollup of indicator_samples: a continuous aggregate here, a table of the
# same name and columns that the API refreshes on plain PostgreSQL (see plain.py, whose
# query a test holds to the continuous aggregate's in revision 0002).
ROLLUP = "indicator_samples_1h"
ROLLUP_COLUMNS = ("indicator", "scope", "bucket", "avg_value", "min_value", "max_value", "samples")


PRELOAD_FIX = (
    "add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart PostgreSQL"
)
Availability = Literal["ready", "not_installed", "not_preloaded"]


def availability(conn: Connection) -> Availability:
    """Whether the server can run TimescaleDB: installed, and loaded at server start.

    An installed but not preloaded extension cannot even be created (`CREATE EXTENSION`
    fails with "must be preloaded"), which is what installing the package leaves until
    the operator edits postgresql.conf.
    """
    installed = conn.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    if installed is None:
        return "not_installed"
    preload = str(conn.execute(text("SELECT current_setting('shared_preload_libraries')")).scalar())
    if "timescaledb" not in {p.strip().strip('"') for p in preload.split(",")}:
        return "not_preloaded"
    return "ready"


def enable_extension(conn: Connection) -> bool:
    """Create the extension when the server can run it; say whether it is now usable."""
    if availability(conn) != "ready":
        return False
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    return True


def storage(conn: Connection) -> Storage:
    """The storage path `cityvitals migrate` chose for this database."""
    value = conn.execute(text(STORAGE_QUERY)).scalar()
    return "timescaledb" if value == "timescaledb" else "postgresql"
