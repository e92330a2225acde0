"""The collectors of a deployment, for leaving a shared subscription safely.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the `collectors` table."""
    tz = TIMESTAMP(timezone=True)
    op.create_table(
        "collectors",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", tz, nullable=False),
        sa.Column("seen_at", tz, nullable=False),
        sa.Column("stopped_at", tz),
        sa.Column("left_at", tz),
    )
