"""Time-series storage: TimescaleDB when the extension is there, plain PostgreSQL else.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from alembic import context, op
from sqlalchemy import text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Every statement below is frozen as this revision first ran it; docs/storage.md
# explains each choice. TimescaleDB documentation pages (formerly docs.timescale.com;
# sources in github.com/timescale/docs under the same paths):
DOCS = "https://www.tigerdata.com/docs"
DOC_CREATE_HYPERTABLE = f"{DOCS}/api/latest/hypertable/create_hypertable"
DOC_COMPRESSION = f"{DOCS}/api/latest/compression/alter_table_compression"
DOC_COMPRESSION_POLICY = f"{DOCS}/api/latest/compression/add_compression_policy"
DOC_RETENTION_POLICY = f"{DOCS}/api/latest/data-retention/add_retention_policy"
DOC_CAGG = f"{DOCS}/api/latest/continuous-aggregates/create_materialized_view"
DOC_CAGG_POLICY = f"{DOCS}/api/latest/continuous-aggregates/add_continuous_aggregate_policy"


class Series(NamedTuple):
    """A table made a hypertable on its time column, and its policies."""

    table: str
    time_column: str
    # Which setting drops its old rows: CITYVITALS_RETAIN_RAW or CITYVITALS_RETAIN_ROLLUPS.
    retention: Literal["raw", "rollups"]
    # Chunk interval as a multiple of CITYVITALS_CHUNK_INTERVAL.
    chunk_factor: int = 1
    # Compressed after CITYVITALS_COMPRESS_AFTER when set.
    segmentby: str | None = None
    orderby: str | None = None


SERIES = (
    Series("readings_parking", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("readings_waste", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("readings_energy", "ts", "raw", segmentby="device_id", orderby="ts DESC"),
    Series("indicator_samples", "ts", "raw", segmentby="indicator, scope", orderby="ts DESC"),
    Series("seq_10m", "bucket", "raw"),
    Series("parking_hourly", "hour", "rollups", chunk_factor=10),
    Series("ingest_minutely", "minute", "rollups", chunk_factor=10),
)

# The hourly rollup of indicator_samples: a continuous aggregate on TimescaleDB, a table
# of the same name and columns on plain PostgreSQL.
ROLLUP = "indicator_samples_1h"
ROLLUP_QUERY = (
    "SELECT indicator, scope, time_bucket(INTERVAL '1 hour', ts) AS bucket, "
    "avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, "
    "count(*) AS samples FROM indicator_samples GROUP BY indicator, scope, bucket"
)

CREATE_HYPERTABLE = (
    "SELECT create_hypertable(CAST(:relation AS regclass), "
    "by_range(CAST(:column AS name), "
    "CAST(:chunk_interval AS interval) * CAST(:factor AS integer)), "
    "create_default_indexes => false, if_not_exists => true, migrate_data => true)"
)
ADD_COMPRESSION_POLICY = (
    "SELECT add_compression_policy(CAST(:relation AS regclass), "
    "compress_after => CAST(:compress_after AS interval), "
    "if_not_exists => true)"
)
ADD_RETENTION_POLICY = (
    "SELECT add_retention_policy(CAST(:relation AS regclass), "
    "drop_after => CAST(:drop_after AS interval), if_not_exists => true)"
)
CREATE_ROLLUP = (
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ROLLUP} "
    "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
    f"{ROLLUP_QUERY} WITH NO DATA"
)
ADD_ROLLUP_POLICY = (
    "SELECT add_continuous_aggregate_policy(CAST(:relation AS regclass), "
    "start_offset => CAST(:start_offset AS interval), "
    "end_offset => CAST(:end_offset AS interval), "
    "schedule_interval => CAST(:schedule_interval AS interval), "
    "if_not_exists => true)"
)

# The plain-PostgreSQL stand-ins: BRIN indexes on the raw tables (compact for tables
# written in time order), and the rollup as a table that the API refreshes.
PLAIN_STATEMENTS = (
    "CREATE INDEX IF NOT EXISTS readings_parking_received_brin "
    "ON readings_parking USING brin (received_at)",
    "CREATE INDEX IF NOT EXISTS readings_waste_received_brin "
    "ON readings_waste USING brin (received_at)",
    "CREATE INDEX IF NOT EXISTS readings_energy_received_brin "
    "ON readings_energy USING brin (received_at)",
    f"CREATE TABLE IF NOT EXISTS {ROLLUP} ("
    "indicator TEXT NOT NULL, "
    "scope TEXT NOT NULL, "
    "bucket TIMESTAMP WITH TIME ZONE NOT NULL, "
    "avg_value FLOAT, "
    "min_value FLOAT, "
    "max_value FLOAT, "
    "samples BIGINT NOT NULL, "
    f"CONSTRAINT {ROLLUP}_pkey PRIMARY KEY (indicator, scope, bucket))",
    f"CREATE INDEX IF NOT EXISTS {ROLLUP}_bucket_brin ON {ROLLUP} USING brin (bucket)",
)


class Step(NamedTuple):
    """One statement of the TimescaleDB path, its parameters and the page it follows."""

    sql: str
    params: dict[str, str | int]
    doc: str


def timescale_steps(options: Any) -> list[Step]:
    """The TimescaleDB statements in the order they run, with the deployment's intervals.

    `options` carries the CITYVITALS_CHUNK_INTERVAL, _COMPRESS_AFTER, _RETAIN_RAW and
    _RETAIN_ROLLUPS settings (`chunk_interval`, `compress_after`, `retain_raw`,
    `retain_rollups`, as interval literals); they travel as bound parameters.
    """
    retain = {"raw": options.retain_raw, "rollups": options.retain_rollups}
    steps: list[Step] = []
    for s in SERIES:
        # create_default_indexes => false: 0001 made the time index, named as
        # TimescaleDB's default one would be (`<table>_<column>_idx`).
        # migrate_data => true: a non-empty table is an error without it.
        steps.append(
            Step(
                CREATE_HYPERTABLE,
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
            # DDL takes no parameters; every name here is a constant of this revision.
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
            steps.append(
                Step(
                    ADD_COMPRESSION_POLICY,
                    {"relation": s.table, "compress_after": options.compress_after},
                    DOC_COMPRESSION_POLICY,
                )
            )
        steps.append(
            Step(
                ADD_RETENTION_POLICY,
                {"relation": s.table, "drop_after": retain[s.retention]},
                DOC_RETENTION_POLICY,
            )
        )
    # WITH NO DATA, so that it may run inside this migration's transaction.
    steps.append(Step(CREATE_ROLLUP, {}, DOC_CAGG))
    steps.append(
        Step(
            ADD_ROLLUP_POLICY,
            {
                "relation": ROLLUP,
                "start_offset": "1 day",
                "end_offset": "1 hour",
                "schedule_interval": "30 minutes",
            },
            DOC_CAGG_POLICY,
        )
    )
    steps.append(
        Step(
            ADD_RETENTION_POLICY,
            {"relation": ROLLUP, "drop_after": options.retain_rollups},
            DOC_RETENTION_POLICY,
        )
    )
    return steps


def upgrade() -> None:
    """Turn the raw tables into hypertables with policies, or give them BRIN indexes."""
    conn = op.get_bind()
    if context.config.attributes["use_timescale"]:
        # All in this migration's transaction: a failure leaves the tables plain.
        options = context.config.attributes["timescale_options"]
        for step in timescale_steps(options):
            conn.execute(text(step.sql), step.params)
    else:
        for statement in PLAIN_STATEMENTS:
            conn.execute(text(statement))
