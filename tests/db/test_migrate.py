"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from cityvitals.db.engine import sqlalchemy_url
from cityvitals.db.migrate import head_revision, run_migrations
from cityvitals.db.schema import metadata
from cityvitals.settings import MigrateSettings


def test_migrated_database_matches_the_schema_metadata(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # The storage path (plain or TimescaleDB) adds time indexes of its own, and the
    # hourly rollup, which is a continuous aggregate on TimescaleDB, a table on plain.
    storage_indexes = [
        d
        for d in diff
        if (d[0] == "remove_index" and d[1].name.endswith(("_brin", "_ts_idx")))
        or (d[0] == "remove_table" and d[1].name == "indicator_samples_1h")
    ]
    assert [d for d in diff if d not in storage_indexes] == []


def test_migrate_twice_is_a_no_op_and_keeps_the_recorded_storage(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        has_ts = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    expected = "timescaledb" if has_ts else "postgresql"
    result = run_migrations(MigrateSettings(database_url=database_url))
    assert result.revision == head_revision()
    assert result.storage == expected
    with psycopg.connect(database_url) as conn:
        storage = conn.execute("SELECT value FROM schema_info WHERE key = 'storage'").fetchone()
        brin = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'readings_%_received_brin'"
        ).fetchone()
    assert storage == (expected,)
    assert brin == (0 if has_ts else 3,)
