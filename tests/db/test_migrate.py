"""Migrations against a real PostgreSQL, on both storage paths.

The migrations are history (they never read `cityvitals.db.schema`), so these tests
hold them to the metadata: Alembic's comparison, a schema dump against the metadata's
own `create_all`, and an upgrade of a database that already holds data.
"""

from __future__ import annotations

import ast
import contextlib
import re
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy import Column, DefaultClause, MetaData, Table, Text, create_engine, text

from cityvitals.db import plain
from cityvitals.db.engine import sqlalchemy_url
from cityvitals.db.migrate import MIGRATIONS, head_revision, run_migrations
from cityvitals.db.schema import metadata
from cityvitals.settings import MigrateSettings
from cityvitals.topics import Kind
from tests.fix_servers import PgAdmin, timescale_mode

# What each storage path adds beyond the metadata, as `compare_metadata` sees it: the
# plain path's BRIN indexes and its rollup table (on TimescaleDB the rollup is a
# continuous aggregate, a view, which the comparison does not look at).
STORAGE_OWN = {
    "postgresql": sorted(
        [f"remove_index readings_{kind}_received_brin" for kind in Kind]
        + ["remove_index indicator_samples_1h_bucket_brin", "remove_table indicator_samples_1h"]
    ),
    "timescaledb": [],
}


def _compare(database_url: str, target: MetaData) -> list[str]:
    """Alembic's differences between a database and metadata, one line each, sorted."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(context, target)
    finally:
        engine.dispose()
    return sorted(_describe(entry) for entry in _flatten(diff))


def _flatten(diff: list[Any]) -> Iterator[tuple[Any, ...]]:
    for entry in diff:
        # Changes to one column come as a list of (op, schema, table, column, ...).
        if isinstance(entry, list):
            yield from entry
        else:
            yield entry


def _describe(entry: tuple[Any, ...]) -> str:
    op = entry[0]
    if op.startswith("modify_"):
        return f"{op} {entry[2]}.{entry[3]}"
    if op in ("add_column", "remove_column"):
        return f"{op} {entry[2]}.{entry[3].name}"
    return f"{op} {getattr(entry[1], 'name', entry[1])}"


def test_migrations_import_no_project_code() -> None:
    # A revision that read today's schema or storage modules would change with them.
    revisions = sorted((MIGRATIONS / "versions").glob("*.py"))
    assert revisions
    for path in revisions:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        assert not {m for m in imported if m.split(".")[0] == "cityvitals"}, path.name


def test_migrated_database_matches_the_schema_metadata(database_url: str, storage: str) -> None:
    assert _compare(database_url, metadata) == STORAGE_OWN[storage]


def test_the_comparison_reports_what_a_migration_forgot(database_url: str, storage: str) -> None:
    # A copy of the metadata with changes no migration made, as if someone had edited
    # cityvitals.db.schema and forgotten the revision.
    changed = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["devices"].append_column(Column("forgotten", Text))
    Table("forgotten_table", changed, Column("id", Text, primary_key=True))
    changed.tables["alerts"].c.normal_count.server_default = DefaultClause(text("1"))
    changed.tables["alerts"].c.district.nullable = False
    assert _compare(database_url, changed) == sorted(
        [
            *STORAGE_OWN[storage],
            "add_column devices.forgotten",
            "add_table forgotten_table",
            "modify_default alerts.normal_count",
            "modify_nullable alerts.district",
        ]
    )


def test_migrate_twice_is_a_no_op_and_keeps_the_recorded_storage(
    database_url: str, storage: str
) -> None:
    has_ts = storage == "timescaledb"
    expected = storage
    # `auto` on a server that has TimescaleDB keeps what the first run recorded.
    result = run_migrations(MigrateSettings(database_url=database_url))
    assert result.revision == head_revision()
    assert result.storage == expected
    with psycopg.connect(database_url) as conn:
        recorded = conn.execute("SELECT value FROM schema_info WHERE key = 'storage'").fetchone()
        brin = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'readings_%_received_brin'"
        ).fetchone()
    assert recorded == (expected,)
    assert brin == (0 if has_ts else 3,)


# --- the frozen migrations build what schema.py describes -------------------------------


def _pg_dump() -> str:
    """The newest pg_dump installed, which can dump the suite's server."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return str(found[-1])
    path = shutil.which("pg_dump")
    if path is None:
        pytest.skip("pg_dump is not installed: the schema dump is not compared")
    return path


def _schema_statements(database_url: str) -> Counter[str]:
    """The DDL of the `public` schema, one statement per entry, whitespace collapsed.

    TimescaleDB's own objects live in other schemas, and the extension's functions in
    `public` belong to it, so pg_dump leaves them out here.
    """
    dump = subprocess.run(
        [
            _pg_dump(),
            "--schema-only",
            "--schema=public",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            database_url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [
        line
        for line in dump.splitlines()
        if line.strip() and not line.startswith(("--", "\\"))  # comments, \restrict
    ]
    statements = (" ".join(s.split()) for s in re.split(r";\s*\n", "\n".join(lines) + "\n"))
    return Counter(
        s
        for s in statements
        if s
        and not s.startswith(("SET ", "SELECT pg_catalog.set_config"))
        and "public.alembic_version" not in s
    )


def test_migrations_build_the_schema_that_the_metadata_creates(
    database_url: str, storage: str, pg_admin: PgAdmin
) -> None:
    # The reference: today's metadata created directly (with the plain rollup table the
    # plain path's `prune` works on), on a database of its own.
    name = f"ref_{uuid.uuid4().hex[:12]}"
    reference_url = pg_admin.create(name)
    try:
        engine = create_engine(sqlalchemy_url(reference_url))
        with engine.begin() as conn:
            metadata.create_all(conn)
            if storage == "postgresql":
                plain.rollup_metadata.create_all(conn)
        engine.dispose()
        reference = _schema_statements(reference_url)
    finally:
        pg_admin.drop(name)
    migrated = _schema_statements(database_url)
    # Every column, type, default, identity, key, check and index: the same statements.
    assert reference - migrated == Counter()
    extra = sorted((migrated - reference).elements())
    if storage == "postgresql":
        assert extra == sorted(
            f"CREATE INDEX readings_{kind}_received_brin ON public.readings_{kind} "
            "USING brin (received_at)"
            for kind in Kind
        )
    else:
        # The hourly rollup, a continuous aggregate: a view over its materialization.
        assert len(extra) == 1
        assert extra[0].startswith("CREATE VIEW public.indicator_samples_1h AS SELECT ")
    # The dump holds every table (it is not empty or cut short).
    created = {s.split()[2].split(".")[1] for s in reference if s.startswith("CREATE TABLE ")}
    assert created >= set(metadata.tables)


# --- an upgrade keeps the data of a deployed database ------------------------------------

# Rows of every table of revision 0002, written as a deployment at 0002 wrote them.
ROWS_AT_0002 = (
    "INSERT INTO devices (device_id, kind, district, site, name, lat, lon, "
    "report_interval_s, opening_hours, key_consumer, contract_kw, auto_registered) VALUES "
    "('p1', 'parking', 'xuhui', 'lot-1', 'Bay 1', 31.19, 121.43, 60, NULL, false, NULL, false), "
    "('w1', 'waste', 'xuhui', 'sq-2', 'Bins 2', 31.2, 121.44, 300, "
    """'{"mon": [["06:00", "22:00"]]}', false, NULL, false), """
    "('e1', 'energy', 'jingan', 'mall', 'Mall', 31.23, 121.45, 60, NULL, true, 250.0, true)",
    "INSERT INTO device_state VALUES ('p1', 'parking', %(ts)s, true, %(ts)s)",
    "INSERT INTO readings_parking VALUES ('p1', %(ts)s, %(rx)s, false, 7, true, 3.6, -81.5)",
    "INSERT INTO latest_parking VALUES ('p1', %(ts)s, %(rx)s, false, 7, true, 3.6, -81.5)",
    "INSERT INTO readings_waste VALUES ('w1', %(ts)s, %(rx)s, true, NULL, "
    """'[{"bin": "a", "fill": 0.8}]', 0.8, 0.8, 1.5, 2.5, 3.5, 21.0, false, false, 3.3)""",
    "INSERT INTO latest_waste VALUES ('w1', %(ts)s, %(rx)s, true, NULL, "
    """'[{"bin": "a", "fill": 0.8}]', 0.8, 0.8, 1.5, 2.5, 3.5, 21.0, false, false, 3.3)""",
    "INSERT INTO readings_energy VALUES ('e1', %(ts)s, %(rx)s, false, 9, 120.5, 10.25, "
    "229.37, 0.97, 15.1)",
    "INSERT INTO latest_energy VALUES ('e1', %(ts)s, %(rx)s, false, 9, 120.5, 10.25, "
    "229.37, 0.97, 15.1)",
    "INSERT INTO events (device_id, event_id, kind, type, ts, received_at) "
    "VALUES ('w1', 'ev-1', 'waste', 'collected', %(ts)s, %(rx)s)",
    "INSERT INTO dead_letters (topic, payload, reason, detail, received_at, collector) "
    "VALUES ('city/parking/p1/reading', '\\x7b7d'::bytea, 'schema', 'missing ts', "
    "%(rx)s, 'c1')",
    "INSERT INTO energy_daily VALUES ('e1', %(day)s, 42.5, %(ts)s)",
    "INSERT INTO waste_daily VALUES ('w1', %(day)s, 'residual', 12.5)",
    "INSERT INTO parking_hourly VALUES ('p1', %(hour)s, 4)",
    "INSERT INTO seq_10m VALUES ('p1', %(hour)s, 1, 7, 7)",
    "INSERT INTO ingest_minutely VALUES (%(hour)s, 'c1', 10, 9, 1, 0, "
    "ARRAY[1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[])",
    "INSERT INTO indicator_samples VALUES ('parking_occupancy', 'city', %(hour)s, 0.5)",
    "INSERT INTO alerts (indicator, entity, district, severity, value, threshold, state, "
    "opened_at, updated_at) VALUES ('bin_fill', 'w1', 'xuhui', 'warning', 0.8, 0.75, "
    "'active', %(ts)s, %(ts)s)",
)
# On plain PostgreSQL the hourly rollup is a table of 0002's; on TimescaleDB a view.
PLAIN_ROLLUP_ROW = (
    "INSERT INTO indicator_samples_1h VALUES ('parking_occupancy', 'city', %(hour)s, "
    "0.5, 0.5, 0.5, 1)"
)


def _relations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The tables and views of `public` (but Alembic's own), with their relkind."""
    rows = conn.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'p', 'v', 'm') AND relname <> 'alembic_version'"
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def _columns(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, list[str]]:
    """The columns of the relations, in order."""
    columns: dict[str, list[str]] = {name: [] for name in names}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ):
        if table in columns:
            columns[str(table)].append(str(column))
    return columns


def _contents(
    conn: psycopg.Connection[Any], columns: dict[str, list[str]]
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the relations in the given columns, sorted.

    A later revision may add columns without changing what this reads. Values come
    back in binary, as stored, so a narrowed type shows too (`real` for `double
    precision` prints the same digits as text).
    """
    contents = {}
    with conn.cursor(binary=True) as cur:
        for name, names in columns.items():
            cur.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                    sql.Identifier(name),
                    sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(names))),
                )
            )
            contents[name] = cur.fetchall()
    return contents


@contextlib.contextmanager
def _own_database(pg_admin: PgAdmin, storage: str) -> Iterator[tuple[str, MigrateSettings]]:
    """A database of its own, for migrating step by step; dropped afterwards."""
    name = f"up_{uuid.uuid4().hex[:12]}"
    url = pg_admin.create(name)
    try:
        yield url, MigrateSettings(database_url=url, timescale=timescale_mode(storage))
    finally:
        pg_admin.drop(name)


def test_upgrading_a_database_that_holds_data_keeps_every_row(
    pg_admin: PgAdmin, storage: str
) -> None:
    # Migrated to 0002 only, as one deployed before 0003.
    with _own_database(pg_admin, storage) as (url, settings):
        _upgrade_with_data(url, settings, storage)


def _upgrade_with_data(url: str, settings: MigrateSettings, storage: str) -> None:
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    values = {
        "ts": ts,
        "rx": ts + timedelta(seconds=2),
        "hour": ts.replace(minute=0, second=0),
        "day": ts.date(),
    }
    assert run_migrations(settings, target="0002").revision == "0002"
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ROWS_AT_0002:
            conn.execute(statement, values)
        if storage == "postgresql":
            conn.execute(PLAIN_ROLLUP_ROW, values)
        before_relations = _relations(conn)
        columns = _columns(conn, sorted(before_relations))
        before = _contents(conn, columns)
    assert "collectors" not in before_relations
    # Every table of 0002 holds data, so every one is checked below.
    assert [n for n, rows in before.items() if not rows] == []

    result = run_migrations(settings)

    assert (result.revision, result.storage) == (head_revision(), storage)
    with psycopg.connect(url, autocommit=True) as conn:
        after_relations = _relations(conn)
        assert after_relations == {
            **before_relations,
            "collectors": "r",
            "vitals_changes": "r",
        }
        # The rows of 0002's tables, column by column, as they were.
        assert _contents(conn, columns) == before
        # Keys, defaults and identities still work on the upgraded tables.
        again = conn.execute(
            "INSERT INTO readings_parking (device_id, ts, received_at, occupied) "
            "VALUES ('p1', %(ts)s, now(), false) ON CONFLICT (device_id, ts) DO NOTHING",
            values,
        )
        assert again.rowcount == 0
        new_id = conn.execute(
            "INSERT INTO dead_letters (topic, payload, reason, detail, received_at) "
            "VALUES ('t', '\\x00'::bytea, 'schema', 'd', now()) RETURNING id"
        ).fetchone()
        assert new_id == (2,)
        # The table 0003 adds takes rows.
        conn.execute(
            "INSERT INTO collectors (client_id, subscription, host, pid, started_at, "
            "seen_at) VALUES ('c1', '$share/cityvitals/city/#', 'h', 1, now(), now())"
        )
        assert conn.execute("SELECT count(*) FROM collectors").fetchone() == (1,)
        # 0004's log: its first row says "reload everything", and its triggers log
        # what a statement on an upgraded table wrote.
        assert conn.execute("SELECT devices FROM vitals_changes").fetchall() == [(None,)]
        conn.execute("UPDATE device_state SET last_seen_at = now() WHERE device_id = 'p1'")
        assert conn.execute(
            "SELECT devices FROM vitals_changes ORDER BY id DESC LIMIT 1"
        ).fetchone() == (["p1"],)


def test_upgrading_drops_the_live_state_of_devices_no_longer_registered(
    pg_admin: PgAdmin, storage: str
) -> None:
    # Before 0005 a device removed from the registry kept its `device_state` row; the
    # write path now looks up only devices heard for the first time, so the row must go
    # for the device to be registered again when it speaks.
    with _own_database(pg_admin, storage) as (url, settings):
        run_migrations(settings, target="0004")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO devices (device_id, kind) VALUES ('kept', 'energy')")
            conn.execute(
                "INSERT INTO device_state (device_id, kind, last_seen_at) "
                "VALUES ('kept', 'energy', now()), ('removed', 'energy', now())"
            )
        run_migrations(settings)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT device_id FROM device_state").fetchall()
        assert rows == [("kept",)]
