"""The v1 schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from cityvitals.db.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table of the v1 schema.

    The first revision builds from the metadata; every later change gets a revision
    of its own with explicit operations, so that this one never changes.
    """
    metadata.create_all(op.get_bind())
