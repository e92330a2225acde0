"""The two storage paths: the TimescaleDB statements, and their plain-PostgreSQL stand-ins.

The statements are revision 0002's (`0002_time_series.py`), frozen there as history.
What can be checked without TimescaleDB is checked here against the schema and a real
PostgreSQL: the statements name real tables and columns, call functions with the
signatures the TimescaleDB docs give, and the plain rollup computes what the continuous
aggregate would. The last test runs the migration on a real TimescaleDB wherever the
suite's server has it (the harness preloads it when it is installed); the rest of the
suite runs every database test on both storage paths (tests/fix_servers.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.exc import DBAPIError

from cityvitals.db import plain, timescale
from cityvitals.db.engine import sqlalchemy_url
from cityvitals.db.migrate import MIGRATIONS, run_migrations
from cityvitals.db.schema import metadata
from cityvitals.settings import MigrateSettings
from tests.fix_servers import PgAdmin, server_has_timescale

OPTIONS = timescale.TimescaleOptions(
    chunk_interval="12 hours",
    compress_after="3 days",
    retain_raw="30 days",
    retain_rollups="1 year",
)

# Stand-ins with the signatures of TimescaleDB's SQL API as its docs and `sql/*.sql`
# give them (argument names, order, defaults), so that PostgreSQL itself checks every
# call: named arguments, regclass casts of our tables, interval casts of our settings.
# `"any"` arguments are only possible in C functions; the stand-ins take intervals.
DOCUMENTED_SIGNATURES = """
CREATE SCHEMA tsdoc;
CREATE FUNCTION tsdoc.by_range(column_name name, partition_interval anyelement = NULL::bigint,
                               partition_func regproc = NULL)
    RETURNS text LANGUAGE sql AS 'SELECT column_name::text';
CREATE FUNCTION tsdoc.create_hypertable(relation regclass, dimension text,
                                        create_default_indexes boolean = true,
                                        if_not_exists boolean = false,
                                        migrate_data boolean = false)
    RETURNS TABLE (hypertable_id integer, created boolean) LANGUAGE sql AS 'SELECT 1, true';
CREATE FUNCTION tsdoc.add_compression_policy(hypertable regclass, compress_after interval,
                                             if_not_exists boolean = false,
                                             schedule_interval interval = NULL,
                                             initial_start timestamptz = NULL,
                                             timezone text = NULL)
    RETURNS integer LANGUAGE sql AS 'SELECT 1000';
CREATE FUNCTION tsdoc.add_retention_policy(relation regclass, drop_after interval,
                                           if_not_exists boolean = false,
                                           schedule_interval interval = NULL,
                                           initial_start timestamptz = NULL,
                                           timezone text = NULL)
    RETURNS integer LANGUAGE sql AS 'SELECT 1001';
CREATE FUNCTION tsdoc.add_continuous_aggregate_policy(continuous_aggregate regclass,
                                                      start_offset interval,
                                                      end_offset interval,
                                                      schedule_interval interval,
                                                      if_not_exists boolean = false,
                                                      initial_start timestamptz = NULL,
                                                      timezone text = NULL)
    RETURNS integer LANGUAGE sql AS 'SELECT 1002';
CREATE FUNCTION tsdoc.time_bucket(bucket_width interval, ts timestamptz)
    RETURNS timestamptz LANGUAGE sql IMMUTABLE
    AS $$SELECT date_bin(bucket_width, ts, TIMESTAMPTZ '2000-01-03 00:00:00+00')$$;
"""
SYNTAX_ERROR = "42601"


def _revision(revision: str) -> ModuleType:
    """The module of a migration, as Alembic loads it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg).get_revision(revision)
    assert script is not None
    return script.module


# Revision 0002: the statements both storage paths ran, as they ran.
TIME_SERIES = _revision("0002")


class RecordingConnection:
    """Stands in for a SQLAlchemy connection: records what is executed."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, Mapping[str, Any]]] = []

    def execute(self, statement: Any, parameters: Mapping[str, Any] | None = None) -> None:
        self.executed.append((str(statement), dict(parameters or {})))


# The plain path's rollup table and prune: on TimescaleDB the rollup is a view, and
# retention policies stand for prune.
plain_only = pytest.mark.parametrize("storage", ["postgresql"], indirect=True)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on a fresh migrated database of the storage path under test."""
    eng = create_engine(sqlalchemy_url(database_url))
    try:
        yield eng
    finally:
        eng.dispose()


def _with_documented_signatures(conn: Connection) -> None:
    conn.exec_driver_sql(DOCUMENTED_SIGNATURES)
    conn.exec_driver_sql("SET search_path = tsdoc, public")


def test_every_hypertable_is_a_schema_table_whose_unique_keys_include_its_time_column() -> None:
    for series in TIME_SERIES.SERIES:
        table = metadata.tables[series.table]
        time = table.c[series.time_column]
        assert isinstance(time.type, TIMESTAMP)
        assert time.type.timezone
        assert not time.nullable
        # Hypertables require every unique key to include the partitioning column.
        assert series.time_column in table.primary_key.columns
        for index in table.indexes:
            assert not index.unique or series.time_column in index.columns
        for column in (series.segmentby or "").split(","):
            assert column.strip() == "" or column.strip() in table.c
        if series.orderby:
            assert series.orderby.split()[0] in table.c


def test_tables_whose_unique_keys_lack_time_stay_plain() -> None:
    planned = {s.table for s in TIME_SERIES.SERIES}
    assert {"events", "dead_letters", "devices", "alerts", "schema_info"}.isdisjoint(planned)


def test_plain_prune_covers_the_tables_that_have_retention_policies() -> None:
    # `plain.prune` reads `timescale.SERIES` at run time; the policies are 0002's.
    assert [(s.table, s.time_column, s.retention) for s in timescale.SERIES] == [
        (s.table, s.time_column, s.retention) for s in TIME_SERIES.SERIES
    ]
    assert timescale.ROLLUP == TIME_SERIES.ROLLUP


def test_every_statement_cites_its_page_and_tolerates_a_second_run() -> None:
    steps = TIME_SERIES.timescale_steps(OPTIONS)
    assert all(step.doc.startswith(TIME_SERIES.DOCS + "/api/latest/") for step in steps)
    for step in steps:
        if step.sql.startswith("SELECT"):
            assert "if_not_exists => true" in step.sql
    # The schema's own time indexes carry the names TimescaleDB's defaults would take.
    creates = [s for s in steps if "create_hypertable" in s.sql]
    assert len(creates) == len(TIME_SERIES.SERIES)
    assert all("create_default_indexes => false" in s.sql for s in creates)
    cagg = [s for s in steps if s.sql.startswith("CREATE MATERIALIZED VIEW")]
    assert len(cagg) == 1
    # Without data, the continuous aggregate can be created inside the migration's
    # transaction; with data it cannot.
    assert cagg[0].sql.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {timescale.ROLLUP} ")
    assert cagg[0].sql.endswith(f" AS {TIME_SERIES.ROLLUP_QUERY} WITH NO DATA")


def test_policies_take_their_intervals_from_the_options() -> None:
    params = [s.params for s in TIME_SERIES.timescale_steps(OPTIONS)]
    compressed = {s.table for s in TIME_SERIES.SERIES if s.segmentby}
    raw = {s.table for s in TIME_SERIES.SERIES if s.retention == "raw"}
    assert {p["relation"] for p in params if "compress_after" in p} == compressed
    assert all(p["compress_after"] == "3 days" for p in params if "compress_after" in p)
    retention = {p["relation"]: p["drop_after"] for p in params if "drop_after" in p}
    assert retention == {
        **{s.table: "30 days" if s.table in raw else "1 year" for s in TIME_SERIES.SERIES},
        timescale.ROLLUP: "1 year",
    }
    assert all(p["chunk_interval"] == "12 hours" for p in params if "chunk_interval" in p)


def _upgrade_0002(monkeypatch: pytest.MonkeyPatch, use_timescale: bool) -> RecordingConnection:
    """Run revision 0002's upgrade on a recorder, with the attributes `migrate` passes."""
    recorder = RecordingConnection()
    attributes = {"use_timescale": use_timescale, "timescale_options": OPTIONS}
    monkeypatch.setattr(TIME_SERIES, "op", SimpleNamespace(get_bind=lambda: recorder))
    monkeypatch.setattr(
        TIME_SERIES, "context", SimpleNamespace(config=SimpleNamespace(attributes=attributes))
    )
    TIME_SERIES.upgrade()
    return recorder


def test_the_timescale_upgrade_runs_the_steps_in_order_with_the_deployment_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _upgrade_0002(monkeypatch, use_timescale=True)
    assert recorder.executed == [(s.sql, s.params) for s in TIME_SERIES.timescale_steps(OPTIONS)]


def test_the_plain_upgrade_runs_only_the_plain_statements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _upgrade_0002(monkeypatch, use_timescale=False)
    assert recorder.executed == [(sql, {}) for sql in TIME_SERIES.PLAIN_STATEMENTS]
    assert not any("timescaledb" in sql for sql, _ in recorder.executed)


@plain_only
def test_statements_parse_and_calls_match_the_documented_signatures(engine: Engine) -> None:
    with engine.connect() as conn:
        _with_documented_signatures(conn)
        for step in TIME_SERIES.timescale_steps(OPTIONS):
            if step.sql.startswith("SELECT"):
                # Resolves against the stand-ins: names, casts and argument names.
                assert conn.execute(text(step.sql), step.params).first() is not None
                continue
            # DDL with TimescaleDB options: PostgreSQL parses it, then refuses the
            # options it does not know (or skips the view that exists as a table here).
            try:
                with conn.begin_nested():
                    conn.execute(text(step.sql), step.params)
            except DBAPIError as exc:
                orig = cast(psycopg.Error, exc.orig)
                assert orig.sqlstate != SYNTAX_ERROR, step.sql
        conn.rollback()


@plain_only
def test_plain_rollup_computes_what_the_continuous_aggregate_query_does(engine: Engine) -> None:
    hour = datetime(2026, 11, 25, 3, tzinfo=UTC)
    rows = [
        {"i": "parking_occupancy", "s": "city", "ts": hour + timedelta(minutes=m), "v": v}
        for m, v in [(0, 0.5), (1, 0.7), (59, 0.6), (60, 0.9), (61, None)]
    ] + [{"i": "parking_occupancy", "s": "xuhui", "ts": hour - timedelta(hours=2), "v": 0.2}]
    with engine.connect() as conn:
        conn.execute(
            text("INSERT INTO indicator_samples VALUES (:i, :s, :ts, :v)"),
            rows,
        )
        plain.refresh_rollup(conn, since=hour + timedelta(minutes=30))
        stored = conn.execute(text("SELECT * FROM indicator_samples_1h ORDER BY 1, 2, 3"))
        assert tuple(stored.keys()) == timescale.ROLLUP_COLUMNS
        _with_documented_signatures(conn)
        # The continuous aggregate's query of 0002, run with the time_bucket stand-in.
        cagg = TIME_SERIES.ROLLUP_QUERY
        expected = conn.execute(
            text(f"SELECT * FROM ({cagg}) q WHERE bucket >= :h ORDER BY 1, 2, 3"),  # noqa: S608
            {"h": hour},
        )
        assert tuple(expected.keys()) == timescale.ROLLUP_COLUMNS
        assert stored.all() == expected.all()
        assert conn.execute(text("SELECT count(*) FROM indicator_samples_1h")).scalar() == 2
        conn.rollback()


@plain_only
def test_plain_rollup_refresh_updates_an_hour_already_stored(engine: Engine) -> None:
    hour = datetime(2026, 11, 25, 3, tzinfo=UTC)
    insert = text("INSERT INTO indicator_samples VALUES ('bin_fill', 'city', :ts, :v)")
    with engine.connect() as conn:
        conn.execute(insert, {"ts": hour, "v": 1.0})
        plain.refresh_rollup(conn, since=hour)
        conn.execute(insert, {"ts": hour + timedelta(minutes=1), "v": 3.0})
        plain.refresh_rollup(conn, since=hour)
        row = conn.execute(
            text("SELECT avg_value, min_value, max_value, samples FROM indicator_samples_1h")
        ).one()
        assert tuple(row) == (2.0, 1.0, 3.0, 2)
        conn.rollback()


@plain_only
def test_plain_prune_deletes_only_rows_older_than_their_retention(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        for age in (timedelta(days=31), timedelta(days=1)):
            conn.execute(
                text(
                    "INSERT INTO readings_parking (device_id, ts, received_at, occupied) "
                    "VALUES ('p1', :ts, :ts, true)"
                ),
                {"ts": now - age},
            )
        for age in (timedelta(days=400), timedelta(days=300)):
            conn.execute(
                text("INSERT INTO indicator_samples_1h VALUES ('x', 'city', :b, 1, 1, 1, 60)"),
                {"b": now - age},
            )
        deleted = plain.prune(conn, retain_raw="30 days", retain_rollups="1 year")
        assert deleted["readings_parking"] == 1
        assert deleted[timescale.ROLLUP] == 1
        assert set(deleted) == {s.table for s in timescale.SERIES} | {timescale.ROLLUP}
        assert conn.execute(text("SELECT count(*) FROM readings_parking")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM indicator_samples_1h")).scalar() == 1
        conn.rollback()


def test_storage_reads_what_migrate_recorded(engine: Engine, storage: str) -> None:
    with engine.connect() as conn:
        assert timescale.storage(conn) == storage


def test_timescale_migration_creates_hypertables_policies_and_rollup(pg_admin: PgAdmin) -> None:
    if not server_has_timescale(pg_admin):
        pytest.skip(
            "needs TimescaleDB installed and preloaded on the suite's server (the harness "
            "preloads it when installed, or set CITYVITALS_TEST_DATABASE_URL)"
        )
    # A database of its own rather than a clone of the session's template: TimescaleDB's
    # background workers connect to databases that have the extension.
    name = f"ts_{uuid.uuid4().hex[:12]}"
    url = pg_admin.create(name)
    try:
        settings = MigrateSettings(database_url=url, timescale="on")
        first = run_migrations(settings)
        again = run_migrations(settings)
        assert (first.storage, again.storage) == ("timescaledb", "timescaledb")
        assert again.revision == first.revision
        with psycopg.connect(pg_admin.url_for(name), autocommit=True) as conn:
            _check_timescale_objects(conn)
            _check_realtime_rollup(conn)
            _check_late_reading_into_compressed_chunk(conn)
    finally:
        pg_admin.drop(name)


def _check_timescale_objects(conn: psycopg.Connection[Any]) -> None:
    hypertables = dict(
        conn.execute(
            "SELECT hypertable_name, compression_enabled "
            "FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'"
        ).fetchall()
    )
    assert hypertables == {s.table: s.segmentby is not None for s in TIME_SERIES.SERIES}
    caggs = conn.execute(
        "SELECT view_name, hypertable_name, materialized_only "
        "FROM timescaledb_information.continuous_aggregates"
    ).fetchall()
    assert caggs == [(timescale.ROLLUP, "indicator_samples", False)]
    # A continuous aggregate's jobs name its materialization hypertable.
    jobs = set(
        conn.execute(
            "SELECT coalesce(c.view_name, j.hypertable_name), j.proc_name "
            "FROM timescaledb_information.jobs j "
            "LEFT JOIN timescaledb_information.continuous_aggregates c "
            "ON c.materialization_hypertable_schema = j.hypertable_schema "
            "AND c.materialization_hypertable_name = j.hypertable_name "
            "WHERE j.proc_name IN ('policy_compression', 'policy_retention', "
            "'policy_refresh_continuous_aggregate')"
        ).fetchall()
    )
    assert jobs == (
        {(s.table, "policy_retention") for s in TIME_SERIES.SERIES}
        | {(s.table, "policy_compression") for s in TIME_SERIES.SERIES if s.segmentby}
        | {
            (timescale.ROLLUP, "policy_retention"),
            (timescale.ROLLUP, "policy_refresh_continuous_aggregate"),
        }
    )


def _check_realtime_rollup(conn: psycopg.Connection[Any]) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO indicator_samples VALUES ('bin_fill', 'city', %s, %s)",
            [(hour, 1.0), (hour + timedelta(seconds=60), 3.0)],
        )
    # Not yet materialized: real-time aggregation answers from the raw samples.
    row = conn.execute(
        "SELECT avg_value, min_value, max_value, samples FROM indicator_samples_1h "
        "WHERE indicator = 'bin_fill' AND scope = 'city' AND bucket = %s",
        (hour,),
    ).fetchone()
    assert row == (2.0, 1.0, 3.0, 2)


def _check_late_reading_into_compressed_chunk(conn: psycopg.Connection[Any]) -> None:
    ts = datetime.now(UTC) - timedelta(days=20)
    insert = (
        "INSERT INTO readings_parking (device_id, ts, received_at, occupied) "
        "VALUES ('p1', %s, now(), true) ON CONFLICT (device_id, ts) DO NOTHING"
    )
    conn.execute(insert, (ts,))
    conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings_parking') c")
    # The collector's redelivered reading: a no-op, not an error or a duplicate.
    assert conn.execute(insert, (ts,)).rowcount == 0
    count = conn.execute("SELECT count(*) FROM readings_parking WHERE device_id = 'p1'").fetchone()
    assert count == (1,)
