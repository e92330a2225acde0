"""The database schema as SQLAlchemy Core metadata.

Migrations in `cityvitals/db/migrations` create it; a test checks that a migrated
database and this metadata agree. All times are `timestamptz` in UTC.
"""

from __future__ import annotations

from typing import assert_never

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

from cityvitals.topics import Kind

metadata = MetaData()
TZ = TIMESTAMP(timezone=True)
KIND_CHECK = "kind IN ('parking', 'waste', 'energy')"

devices = Table(
    "devices",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("district", Text),
    Column("site", Text),
    Column("name", Text),
    Column("lat", Float),
    Column("lon", Float),
    Column("report_interval_s", Integer),
    Column("opening_hours", JSONB),
    Column("key_consumer", Boolean, nullable=False, server_default=text("false")),
    Column("contract_kw", Float),
    Column("auto_registered", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", TZ, nullable=False, server_default=text("now()")),
    Column("updated_at", TZ, nullable=False, server_default=text("now()")),
    CheckConstraint(KIND_CHECK, name="devices_kind_check"),
    Index("devices_district_kind_idx", "district", "kind"),
)

# What a registry entry holds (docs/registry.md).
REGISTRY_FIELDS = (
    "device_id",
    "kind",
    "district",
    "site",
    "name",
    "lat",
    "lon",
    "report_interval_s",
    "opening_hours",
    "key_consumer",
    "contract_kw",
)

device_state = Table(
    "device_state",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("last_seen_at", TZ),
    Column("status_online", Boolean),
    Column("status_at", TZ),
)


def _reading_columns(kind: Kind) -> list[Column[object]]:
    base: list[Column[object]] = [
        Column("device_id", Text, nullable=False),
        Column("ts", TZ, nullable=False),
        Column("received_at", TZ, nullable=False),
        Column("ts_from_broker", Boolean, nullable=False, server_default=text("false")),
        Column("seq", BigInteger),
    ]
    match kind:
        case Kind.PARKING:
            return [
                *base,
                Column("occupied", Boolean, nullable=False),
                Column("battery_v", Float),
                Column("rssi_dbm", Float),
            ]
        case Kind.WASTE:
            return [
                *base,
                Column("bins", JSONB, nullable=False),
                Column("fill_max", Float, nullable=False),
                Column("fill_mean", Float, nullable=False),
                Column("h2s_ppm", Float),
                Column("nh3_ppm", Float),
                Column("ch4_pct_lel", Float),
                Column("temp_c", Float),
                Column("seepage", Boolean),
                Column("door_open", Boolean),
                Column("battery_v", Float),
            ]
        case Kind.ENERGY:
            return [
                *base,
                Column("active_power_kw", Float, nullable=False),
                Column("energy_kwh", Float),
                Column("voltage_v", Float),
                Column("power_factor", Float),
                Column("adjustable_kw", Float),
            ]
        case _:
            assert_never(kind)


# Raw history, one table per kind; (device_id, ts) is the de-duplication key
# (docs/wire.md, delivery guarantee).
readings = {
    kind: Table(
        f"readings_{kind}",
        metadata,
        *_reading_columns(kind),
        PrimaryKeyConstraint("device_id", "ts", name=f"readings_{kind}_pkey"),
        Index(f"readings_{kind}_ts_idx", "ts"),
    )
    for kind in Kind
}

# The newest reading per device by `ts`; late readings never overwrite it.
latest = {
    kind: Table(
        f"latest_{kind}",
        metadata,
        *_reading_columns(kind),
        PrimaryKeyConstraint("device_id", name=f"latest_{kind}_pkey"),
    )
    for kind in Kind
}

events = Table(
    "events",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("ts", TZ, nullable=False),
    Column("received_at", TZ, nullable=False),
    Column("ts_from_broker", Boolean, nullable=False, server_default=text("false")),
    Column("attrs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    PrimaryKeyConstraint("device_id", "event_id", name="events_pkey"),
    Index("events_type_ts_idx", "type", "ts"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("received_at", TZ, nullable=False),
    Column("collector", Text),
    Column("replayed_at", TZ),
    Column("replay_result", Text),
    Index("dead_letters_received_at_idx", "received_at"),
    Index("dead_letters_reason_received_at_idx", "reason", "received_at"),
)

# Aggregates the collector maintains in the same transaction as the readings, so
# that the API never scans history (see docs/design.md).
energy_daily = Table(
    "energy_daily",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("consumption_kwh", Float, nullable=False),
    Column("last_ts", TZ, nullable=False),
    PrimaryKeyConstraint("device_id", "day", name="energy_daily_pkey"),
    Index("energy_daily_day_idx", "day"),
)

waste_daily = Table(
    "waste_daily",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("category", Text, nullable=False),
    Column("deposited_kg", Float, nullable=False),
    PrimaryKeyConstraint("device_id", "day", "category", name="waste_daily_pkey"),
    Index("waste_daily_day_idx", "day"),
)

parking_hourly = Table(
    "parking_hourly",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("hour", TZ, nullable=False),
    Column("transitions", Integer, nullable=False),
    PrimaryKeyConstraint("device_id", "hour", name="parking_hourly_pkey"),
    Index("parking_hourly_hour_idx", "hour"),
)

seq_10m = Table(
    "seq_10m",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("bucket", TZ, nullable=False),
    Column("min_seq", BigInteger, nullable=False),
    Column("max_seq", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    PrimaryKeyConstraint("device_id", "bucket", name="seq_10m_pkey"),
    Index("seq_10m_bucket_idx", "bucket"),
)

# Upper bounds (seconds) of the ingest-lag histogram kept per minute.
LAG_BOUNDS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

ingest_minutely = Table(
    "ingest_minutely",
    metadata,
    Column("minute", TZ, nullable=False),
    Column("collector", Text, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("stored", BigInteger, nullable=False),
    Column("duplicates", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    # Counts per LAG_BOUNDS_S bucket, plus one for anything slower.
    Column("lag_counts", ARRAY(BigInteger), nullable=False),
    PrimaryKeyConstraint("minute", "collector", name="ingest_minutely_pkey"),
)

# Written by the API: indicator values once a minute, for /v1/series and peak load.
indicator_samples = Table(
    "indicator_samples",
    metadata,
    Column("indicator", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("ts", TZ, nullable=False),
    Column("value", Float),
    PrimaryKeyConstraint("indicator", "scope", "ts", name="indicator_samples_pkey"),
    Index("indicator_samples_ts_idx", "ts"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("indicator", Text, nullable=False),
    Column("entity", Text, nullable=False),
    Column("district", Text),
    Column("severity", Text, nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("state", Text, nullable=False),
    Column("opened_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("cleared_at", TZ),
    Column("normal_count", Integer, nullable=False, server_default=text("0")),
    Index("alerts_state_idx", "state", "opened_at"),
    Index(
        "alerts_one_active_idx",
        "indicator",
        "entity",
        unique=True,
        postgresql_where=text("state = 'active'"),
    ),
)

# What the database can do, recorded by `cityvitals migrate` for the services.
schema_info = Table(
    "schema_info",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# The collectors of a deployment and their subscription: a collector stopped with
# SIGTERM leaves its group (and ends its broker session) only while another member
# is alive, so the last one keeps the session that queues readings until it is back.
collectors = Table(
    "collectors",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("subscription", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("seen_at", TZ, nullable=False),
    Column("stopped_at", TZ),
    Column("left_at", TZ),
)

# What each transaction that changed the vital signs' inputs changed: the devices its
# statements wrote, or NULL for "anything may have changed" (a TRUNCATE, a rebuild, a
# migration). Triggers on the tables the vital signs are computed from write it, so no
# writer can forget (the collectors, the registry, a rebuild, an operator's own SQL).
# The API folds the rows of transactions it has not seen yet (by `xid`, see
# `cityvitals.changes`); rows older than its retention are deleted.
vitals_changes = Table(
    "vitals_changes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "xid",
        BigInteger,
        nullable=False,
        server_default=text("(pg_current_xact_id())::text::bigint"),
    ),
    Column("at", TZ, nullable=False, server_default=text("now()")),
    Column("devices", ARRAY(Text)),
    Index("vitals_changes_xid_idx", "xid"),
    Index("vitals_changes_at_idx", "at"),
)

# The tables whose rows make up a device's state in the vital signs.
CHANGE_LOGGED = (
    "devices",
    "device_state",
    "latest_parking",
    "latest_waste",
    "latest_energy",
    "energy_daily",
    "waste_daily",
)
CHANGE_LOG_DDL = (
    "CREATE FUNCTION vitals_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) SELECT array_agg(device_id) FROM changed "
    "HAVING count(*) > 0; RETURN NULL; END $$",
    "CREATE FUNCTION vitals_log_dropoffs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) SELECT array_agg(device_id) FROM changed "
    "WHERE type = 'off_hours_dropoff' HAVING count(*) > 0; RETURN NULL; END $$",
    "CREATE FUNCTION vitals_log_everything() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) VALUES (NULL); RETURN NULL; END $$",
    *(
        f"CREATE TRIGGER {table}_vitals_{event.lower()} AFTER {event} ON {table} "
        f"REFERENCING {'OLD' if event == 'DELETE' else 'NEW'} TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_changes()"
        for table in CHANGE_LOGGED
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
    *(
        f"CREATE TRIGGER {table}_vitals_truncate AFTER TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_everything()"
        for table in CHANGE_LOGGED
    ),
    "CREATE TRIGGER events_vitals_insert AFTER INSERT ON events "
    "REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_dropoffs()",
)
for _statement in CHANGE_LOG_DDL:
    event.listen(metadata, "after_create", DDL(_statement))  # type: ignore[no-untyped-call]
