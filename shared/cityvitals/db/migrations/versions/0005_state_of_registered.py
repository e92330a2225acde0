"""Live state only for devices in the registry.

Removing a device from the registry now removes its `device_state` row too, and the
write path looks a device up in the registry only when it is heard for the first
time (its `device_state` row is inserted). Rows left by devices removed before this
revision are dropped, so that those devices, if they speak again, are registered as
`unassigned` as before. Their history stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the live state of devices no longer in the registry."""
    op.execute(
        "DELETE FROM device_state s "
        "WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = s.device_id)"
    )


def downgrade() -> None:
    """Nothing to restore: the dropped rows were stale."""
