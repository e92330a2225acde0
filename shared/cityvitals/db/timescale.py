"""The TimescaleDB path, in one place: hypertables, compression, retention, aggregates.

Used only when the extension is available (see `cityvitals.db.migrate`); every
statement follows the TimescaleDB documentation (each `Step` names its page) and is
verified against a real TimescaleDB separately from the plain-PostgreSQL suite.
Target: TimescaleDB 2.17 or later on PostgreSQL 16, using the generalized
`create_hypertable(..., by_range(...))` interface of 2.13 and later. See docs/storage.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text

# The documentation pages the statements below follow (formerly under
# docs.timescale.com; the sources are in github.com/timescale/docs under the same paths).
DOCS = "https://www.tigerdata.com/docs"
DOC_CREATE_HYPERTABLE = f"{DOCS}/api/latest/hypertable/create_hypertable"
DOC_COMPRESSION = f"{DOCS}/api/latest/compression/alter_table_compression"
DOC_COMPRESSION_POLICY = f"{DOCS}/api/latest/compression/add_compression_policy"
DOC_RETENTION_POLICY = f"{DOCS}/api/latest/data-retention/add_retention_policy"
DOC_CAGG = f"{DOCS}/api/latest/continuous-aggregates/create_materialized_view"
DOC_CAGG_POLICY = f"{DOCS}/api/latest/continuous-aggregates/add_continuous_aggregate_policy"

Storage = Literal["timescaledb", "postgresql"]
# What `cityvitals migrate` recorded; services that hold a psycopg pool run this query.
STORAGE_QUERY = "SELECT value FROM schema_info WHERE key = 'storage'"


@dataclass(frozen=True, slots=True)
class TimescaleOptions:
    """Policy intervals, as PostgreSQL interval literals."""

    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retain_raw: str = "90 days"
    retain_rollups: str = "2 years"


@dataclass(frozen=True, slots=True)
class Series:
    """A table kept as a hypertable on its time column, with its policies."""

    table: str
    time_column: str
    # Which retention setting drops its old rows: CITYVITALS_RETAIN_RAW or _ROLLUPS.
    retention: Literal["raw", "rollups"]
    # Chunk interval as a multiple of CITYVITALS_CHUNK_INTERVAL: rollups are small, and
    # ten times the raw interval is what TimescaleDB itself gives a continuous
    # aggregate (use-timescale/latest/continuous-aggregates/create-a-continuous-aggregate).
    chunk_factor: int = 1
    # Compressed after CITYVITALS_COMPRESS_AFTER when set; the column(s) a query filters on.
    segmentby: str | None = None
    orderby: str | None = None


# Every unique key of these tables includes the time column, as hypertables require
# (use-timescale/latest/hypertables/hypertables-and-unique-indexes). `events` and
# `dead_letters` stay plain tables: their unique keys do not include time.
SERIES = (
    Series("readings_parking", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("readings_waste", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("readings_energy", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("indicator_samples", "ts", "raw", segmentby="indicator, scope", orderby="ts DESC"),
    # As many rows as raw readings per device and 10 minutes; upserted by late readings
    # up to the too-old limit, so never compressed.
    Series("seq_10m", "bucket", "raw"),
    Series("parking_hourly", "hour", "rollups", chunk_factor=10),
    Series("ingest_minutely", "minute", "rollups", chunk_factor=10),
)

# The hourly rollup of indicator_samples: a continuous aggregate here, a table of the
# same name and columns that the API refreshes on plain PostgreSQL (see plain.py, whose
# query a test holds to this one).
ROLLUP = "indicator_samples_1h"
ROLLUP_COLUMNS = ("indicator", "scope", "bucket", "avg_value", "min_value", "max_value", "samples")
ROLLUP_QUERY = (
    "SELECT indicator, scope, time_bucket(INTERVAL '1 hour', ts) AS bucket, "
    "avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, "
    "count(*) AS samples FROM indicator_samples GROUP BY indicator, scope, bucket"
)

# The refresh window of the rollup, relative to when the policy runs. The API writes
# samples for the current minute only, so a day back is plenty; the newest hour is left
# to real-time aggregation, as the refresh-policy docs recommend
# (use-timescale/latest/continuous-aggregates/refresh-policies).
ROLLUP_REFRESH_START = "1 day"
ROLLUP_REFRESH_END = "1 hour"
ROLLUP_REFRESH_EVERY = "30 minutes"


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of the TimescaleDB path and the documentation page it follows."""

    sql: str
    params: dict[str, str | int]
    doc: str


def plan(options: TimescaleOptions) -> list[Step]:
    """The statements `apply` runs, in order; `if_not_exists` wherever the docs offer it."""
    retain = {"raw": options.retain_raw, "rollups": options.retain_rollups}
    steps: list[Step] = []
    for s in SERIES:
        # create_hypertable with the generalized by_range dimension (2.13+).
        # create_default_indexes => false: the schema already has its time index, named
        # as TimescaleDB's default one would be (`<table>_<column>_idx`).
        # migrate_data => true: a non-empty table is an error without it.
        # if_not_exists => true: a warning, not an error, for an existing hypertable.
        steps.append(
            Step(
                "SELECT create_hypertable(CAST(:relation AS regclass), "
                "by_range(CAST(:column AS name), "
                "CAST(:chunk_interval AS interval) * CAST(:factor AS integer)), "
                "create_default_indexes => false, if_not_exists => true, migrate_data => true)",
                {
                    "relation": s.table,
                    "column": s.time_column,
                    "chunk_interval": options.chunk_interval,
                    "factor": s.chunk_factor,
                },
                DOC_CREATE_HYPERTABLE,
            )
        )
        if s.segmentby is not None:
            # ALTER TABLE ... SET (timescaledb.compress, ...) only enables compression;
            # the policy below compresses. DDL takes no parameters, and every name here
            # is a constant of this module that a test checks against the schema.
            orderby = s.orderby or f"{s.time_column} DESC"
            steps.append(
                Step(
                    f"ALTER TABLE {s.table} SET (timescaledb.compress, "
                    f"timescaledb.compress_segmentby = '{s.segmentby}', "
                    f"timescaledb.compress_orderby = '{orderby}')",
                    {},
                    DOC_COMPRESSION,
                )
            )
            # Compress chunks whose data is all older than compress_after.
            steps.append(
                Step(
                    "SELECT add_compression_policy(CAST(:relation AS regclass), "
                    "compress_after => CAST(:compress_after AS interval), "
                    "if_not_exists => true)",
                    {"relation": s.table, "compress_after": options.compress_after},
                    DOC_COMPRESSION_POLICY,
                )
            )
        # Drop chunks whose data is all older than drop_after.
        steps.append(
            Step(
                "SELECT add_retention_policy(CAST(:relation AS regclass), "
                "drop_after => CAST(:drop_after AS interval), if_not_exists => true)",
                {"relation": s.table, "drop_after": retain[s.retention]},
                DOC_RETENTION_POLICY,
            )
        )
    # A continuous aggregate. WITH NO DATA: the default, WITH DATA, refreshes at once and
    # so cannot run inside a transaction block; without data it can, and this migration
    # runs in one. The source table is new and empty, so there is nothing to refresh.
    # materialized_only = false: real-time aggregation adds the hours the policy has not
    # materialized yet (the documented default differs between versions: set it).
    steps.append(
        Step(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ROLLUP} "
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            f"{ROLLUP_QUERY} WITH NO DATA",
            {},
            DOC_CAGG,
        )
    )
    steps.append(
        Step(
            "SELECT add_continuous_aggregate_policy(CAST(:relation AS regclass), "
            "start_offset => CAST(:start_offset AS interval), "
            "end_offset => CAST(:end_offset AS interval), "
            "schedule_interval => CAST(:schedule_interval AS interval), "
            "if_not_exists => true)",
            {
                "relation": ROLLUP,
                "start_offset": ROLLUP_REFRESH_START,
                "end_offset": ROLLUP_REFRESH_END,
                "schedule_interval": ROLLUP_REFRESH_EVERY,
            },
            DOC_CAGG_POLICY,
        )
    )
    # A retention policy works on a continuous aggregate as on a hypertable.
    steps.append(
        Step(
            "SELECT add_retention_policy(CAST(:relation AS regclass), "
            "drop_after => CAST(:drop_after AS interval), if_not_exists => true)",
            {"relation": ROLLUP, "drop_after": options.retain_rollups},
            DOC_RETENTION_POLICY,
        )
    )
    return steps


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
    """Convert the time-series tables to hypertables and add the policies and rollup."""
    # Every statement may run inside the migration's transaction (see the continuous
    # aggregate above), so a failure leaves the database as plain as it was.
    for step in plan(options):
        conn.execute(text(step.sql), step.params)


def storage(conn: Connection) -> Storage:
    """The storage path `cityvitals migrate` chose for this database."""
    value = conn.execute(text(STORAGE_QUERY)).scalar()
    return "timescaledb" if value == "timescaledb" else "postgresql"
