"""The plain-PostgreSQL path: what stands in for TimescaleDB's storage features.

Hypertable chunks become BRIN indexes, the continuous aggregate becomes a table the
API refreshes (`refresh_rollup`), and retention policies become `prune`, which
something has to call: nothing runs in the background here. See docs/storage.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    cast,
    delete,
    func,
    literal,
    text,
)
from sqlalchemy.dialects.postgresql import INTERVAL, TIMESTAMP

from cityvitals.db.schema import metadata
from cityvitals.db.timescale import ROLLUP, SERIES

# Not in `schema.metadata`: on TimescaleDB the same name is a continuous aggregate.
# Revision 0002 creates one or the other; this is the table, for `prune`.
rollup_metadata = MetaData()
indicator_samples_1h = Table(
    ROLLUP,
    rollup_metadata,
    Column("indicator", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("bucket", TIMESTAMP(timezone=True), nullable=False),
    Column("avg_value", Float),
    Column("min_value", Float),
    Column("max_value", Float),
    Column("samples", BigInteger, nullable=False),
    PrimaryKeyConstraint("indicator", "scope", "bucket", name=f"{ROLLUP}_pkey"),
    # Written in time order like the raw tables; `prune` deletes by bucket.
    Index(f"{ROLLUP}_bucket_brin", "bucket", postgresql_using="brin"),
)

# The continuous aggregate's query (ROLLUP_QUERY of revision 0002) over the hours from
# the one holding :since, with date_bin for time_bucket. time_bucket's default origin for
# timestamptz is a Monday at midnight UTC; any whole hour gives the same hourly buckets.
_REFRESH = """
INSERT INTO indicator_samples_1h
    (indicator, scope, bucket, avg_value, min_value, max_value, samples)
SELECT indicator, scope,
       date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       count(*) AS samples
FROM indicator_samples
WHERE ts >= date_bin(INTERVAL '1 hour', CAST(:since AS timestamptz),
                     TIMESTAMPTZ '2000-01-03 00:00:00+00')
GROUP BY indicator, scope, bucket
ON CONFLICT (indicator, scope, bucket) DO UPDATE SET
    avg_value = excluded.avg_value, min_value = excluded.min_value,
    max_value = excluded.max_value, samples = excluded.samples
"""


def refresh_rollup(conn: Connection, *, since: datetime) -> int:
    """Recompute the hourly rollup for every hour from the one holding `since`."""
    return conn.execute(text(_REFRESH), {"since": since}).rowcount


def prune(conn: Connection, *, retain_raw: str, retain_rollups: str) -> dict[str, int]:
    """Delete rows older than the retention settings; say how many, per table."""
    retain = {"raw": retain_raw, "rollups": retain_rollups}
    targets = [(metadata.tables[s.table], s.time_column, retain[s.retention]) for s in SERIES] + [
        (indicator_samples_1h, "bucket", retain_rollups)
    ]
    deleted: dict[str, int] = {}
    for table, column, keep in targets:
        cutoff = func.now() - cast(literal(keep), INTERVAL)
        result = conn.execute(delete(table).where(table.c[column] < cutoff))
        deleted[table.name] = result.rowcount
    return deleted
