"""The change log the API keeps its in-memory city state up to date from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen as this revision wrote them (today's are in `cityvitals.db.schema`).
LOGGED = (
    "devices",
    "device_state",
    "latest_parking",
    "latest_waste",
    "latest_energy",
    "energy_daily",
    "waste_daily",
)
FUNCTIONS = (
    "CREATE FUNCTION vitals_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) SELECT array_agg(device_id) FROM changed "
    "HAVING count(*) > 0; RETURN NULL; END $$",
    "CREATE FUNCTION vitals_log_dropoffs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) SELECT array_agg(device_id) FROM changed "
    "WHERE type = 'off_hours_dropoff' HAVING count(*) > 0; RETURN NULL; END $$",
    "CREATE FUNCTION vitals_log_everything() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO vitals_changes (devices) VALUES (NULL); RETURN NULL; END $$",
)


def upgrade() -> None:
    """Create `vitals_changes` and the triggers that write it; its first row tells a
    running API to reload everything."""
    op.execute(
        "CREATE TABLE vitals_changes ("
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint), "
        "at timestamptz NOT NULL DEFAULT now(), "
        "devices text[])"
    )
    op.execute("CREATE INDEX vitals_changes_xid_idx ON vitals_changes (xid)")
    op.execute("CREATE INDEX vitals_changes_at_idx ON vitals_changes (at)")
    for statement in FUNCTIONS:
        op.execute(statement)
    for table in LOGGED:
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_vitals_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {'OLD' if event == 'DELETE' else 'NEW'} TABLE AS changed "
                "FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_changes()"
            )
        op.execute(
            f"CREATE TRIGGER {table}_vitals_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_everything()"
        )
    op.execute(
        "CREATE TRIGGER events_vitals_insert AFTER INSERT ON events REFERENCING NEW TABLE "
        "AS changed FOR EACH STATEMENT EXECUTE FUNCTION vitals_log_dropoffs()"
    )
    op.execute("INSERT INTO vitals_changes (devices) VALUES (NULL)")
