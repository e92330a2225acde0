"""The TimescaleDB path, in one place: hypertables, compression, retention, aggregates.

Used only when the extension is available (see `cityvitals.db.migrate`); every
statement follows the TimescaleDB documentation and is verified against a real
TimescaleDB separately from the plain-PostgreSQL suite.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class TimescaleOptions:
    """Policy intervals, as PostgreSQL interval literals."""

    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retain_raw: str = "90 days"
    retain_rollups: str = "2 years"


def enable_extension(conn: Connection) -> bool:
    """Create the extension if the server has it; say whether it is now usable."""
    available = conn.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    if available is None:
        return False
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    return True


def apply(conn: Connection, options: TimescaleOptions) -> None:
    """Convert the raw tables to hypertables and add the policies."""
    raise NotImplementedError("filled in by the TimescaleDB path")
