"""The plain-PostgreSQL path: what stands in for TimescaleDB's storage features."""

from __future__ import annotations

from sqlalchemy import Connection, text

from cityvitals.db.schema import KINDS


def apply(conn: Connection) -> None:
    """Give the append-mostly raw tables compact BRIN indexes on time."""
    # BRIN suits tables written in time order: a few pages index millions of rows,
    # which is what a hypertable's chunking buys on TimescaleDB.
    for kind in KINDS:
        conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS readings_{kind}_received_brin "
                f"ON readings_{kind} USING brin (received_at)"
            )
        )
