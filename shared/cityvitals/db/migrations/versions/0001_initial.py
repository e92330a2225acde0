"""The v1 schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here as the v1 schema was: a migration says what it creates and never reads
# today's metadata (a later change to `cityvitals.db.schema` gets a revision of its own).
TZ = TIMESTAMP(timezone=True)
FALSE = sa.text("false")


def _reading_columns(kind: str) -> list[sa.Column[object]]:
    """The columns the raw readings and the latest reading of a kind share."""
    columns: list[sa.Column[object]] = [
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("ts_from_broker", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("seq", sa.BigInteger),
    ]
    if kind == "parking":
        columns += [
            sa.Column("occupied", sa.Boolean, nullable=False),
            sa.Column("battery_v", sa.Float),
            sa.Column("rssi_dbm", sa.Float),
        ]
    elif kind == "waste":
        columns += [
            sa.Column("bins", JSONB, nullable=False),
            sa.Column("fill_max", sa.Float, nullable=False),
            sa.Column("fill_mean", sa.Float, nullable=False),
            sa.Column("h2s_ppm", sa.Float),
            sa.Column("nh3_ppm", sa.Float),
            sa.Column("ch4_pct_lel", sa.Float),
            sa.Column("temp_c", sa.Float),
            sa.Column("seepage", sa.Boolean),
            sa.Column("door_open", sa.Boolean),
            sa.Column("battery_v", sa.Float),
        ]
    elif kind == "energy":
        columns += [
            sa.Column("active_power_kw", sa.Float, nullable=False),
            sa.Column("energy_kwh", sa.Float),
            sa.Column("voltage_v", sa.Float),
            sa.Column("power_factor", sa.Float),
            sa.Column("adjustable_kw", sa.Float),
        ]
    else:
        raise ValueError(f"no readings of kind {kind!r} in v1")
    return columns


def upgrade() -> None:
    """Create every table of the v1 schema, with its keys, defaults and indexes."""
    op.create_table(
        "devices",
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("district", sa.Text),
        sa.Column("site", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("report_interval_s", sa.Integer),
        sa.Column("opening_hours", JSONB),
        sa.Column("key_consumer", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("contract_kw", sa.Float),
        sa.Column("auto_registered", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("kind IN ('parking', 'waste', 'energy')", name="devices_kind_check"),
    )
    op.create_index("devices_district_kind_idx", "devices", ["district", "kind"])

    op.create_table(
        "device_state",
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("last_seen_at", TZ),
        sa.Column("status_online", sa.Boolean),
        sa.Column("status_at", TZ),
    )

    for kind in ("parking", "waste", "energy"):
        # Raw history; (device_id, ts) is the de-duplication key.
        op.create_table(
            f"readings_{kind}",
            *_reading_columns(kind),
            sa.PrimaryKeyConstraint("device_id", "ts", name=f"readings_{kind}_pkey"),
        )
        op.create_index(f"readings_{kind}_ts_idx", f"readings_{kind}", ["ts"])
    for kind in ("parking", "waste", "energy"):
        # The newest reading per device.
        op.create_table(
            f"latest_{kind}",
            *_reading_columns(kind),
            sa.PrimaryKeyConstraint("device_id", name=f"latest_{kind}_pkey"),
        )

    op.create_table(
        "events",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("ts_from_broker", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.PrimaryKeyConstraint("device_id", "event_id", name="events_pkey"),
    )
    op.create_index("events_type_ts_idx", "events", ["type", "ts"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("collector", sa.Text),
        sa.Column("replayed_at", TZ),
        sa.Column("replay_result", sa.Text),
    )
    op.create_index("dead_letters_received_at_idx", "dead_letters", ["received_at"])
    op.create_index(
        "dead_letters_reason_received_at_idx", "dead_letters", ["reason", "received_at"]
    )

    op.create_table(
        "energy_daily",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("consumption_kwh", sa.Float, nullable=False),
        sa.Column("last_ts", TZ, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "day", name="energy_daily_pkey"),
    )
    op.create_index("energy_daily_day_idx", "energy_daily", ["day"])

    op.create_table(
        "waste_daily",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("deposited_kg", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "day", "category", name="waste_daily_pkey"),
    )
    op.create_index("waste_daily_day_idx", "waste_daily", ["day"])

    op.create_table(
        "parking_hourly",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("hour", TZ, nullable=False),
        sa.Column("transitions", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "hour", name="parking_hourly_pkey"),
    )
    op.create_index("parking_hourly_hour_idx", "parking_hourly", ["hour"])

    op.create_table(
        "seq_10m",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("bucket", TZ, nullable=False),
        sa.Column("min_seq", sa.BigInteger, nullable=False),
        sa.Column("max_seq", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "bucket", name="seq_10m_pkey"),
    )
    op.create_index("seq_10m_bucket_idx", "seq_10m", ["bucket"])

    op.create_table(
        "ingest_minutely",
        sa.Column("minute", TZ, nullable=False),
        sa.Column("collector", sa.Text, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("stored", sa.BigInteger, nullable=False),
        sa.Column("duplicates", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        # One count per ingest-lag bucket (11 bounds, plus one for anything slower).
        sa.Column("lag_counts", ARRAY(sa.BigInteger), nullable=False),
        sa.PrimaryKeyConstraint("minute", "collector", name="ingest_minutely_pkey"),
    )

    op.create_table(
        "indicator_samples",
        sa.Column("indicator", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("value", sa.Float),
        sa.PrimaryKeyConstraint("indicator", "scope", "ts", name="indicator_samples_pkey"),
    )
    op.create_index("indicator_samples_ts_idx", "indicator_samples", ["ts"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("indicator", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("district", sa.Text),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("cleared_at", TZ),
        sa.Column("normal_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.create_index("alerts_state_idx", "alerts", ["state", "opened_at"])
    # At most one active alert per indicator and entity.
    op.create_index(
        "alerts_one_active_idx",
        "alerts",
        ["indicator", "entity"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )

    op.create_table(
        "schema_info",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
