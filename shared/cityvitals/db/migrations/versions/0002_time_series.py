"""Time-series storage: TimescaleDB when the extension is there, plain PostgreSQL else.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import context, op

from cityvitals.db import plain, timescale

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Turn the raw tables into hypertables with policies, or give them BRIN indexes."""
    conn = op.get_bind()
    options = context.config.attributes["timescale_options"]
    if context.config.attributes["use_timescale"]:
        timescale.apply(conn, options)
    else:
        plain.apply(conn)
