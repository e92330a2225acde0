"""Alerts: per-site and per-device threshold crossings, opened, escalated and cleared.

Each snapshot's entity checks are compared with the active alerts in the `alerts`
table (the database is the truth, so several API processes agree):

- a check worse than normal with no active alert opens one;
- a check worse than the alert's severity escalates it (severity only goes up while
  the alert is active; `value` and `threshold` record the latest escalation);
- a check back to normal clears the alert when the value is past the lowest threshold
  by `compute.HYSTERESIS_MARGIN` (5 % of that threshold), or else after two
  consecutive normal *readings* (the entity's newest reading time must advance
  between the two evaluations, so a quiet device cannot clear by being re-read);
- an entity that stops reporting keeps its alert: no news is not good news.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cityvitals.api.compute import EntityCheck
from cityvitals.catalogue import Status

# Normal readings in a row that clear an alert whose value is still within the margin.
CLEAR_AFTER_NORMAL = 2
SEVERITY = {s.label: s for s in Status}


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """An active alert as stored."""

    id: int
    indicator: str
    entity: str
    district: str | None
    severity: Status
    value: float | None
    threshold: float | None
    opened_at: datetime
    normal_count: int


class AlertBook:
    """Evaluates entity checks against the `alerts` table."""

    def __init__(self) -> None:
        # (indicator, entity) -> newest reading time seen at the last evaluation
        self._last_ts: dict[tuple[str, str], datetime | None] = {}
        self.active: list[ActiveAlert] = []

    async def load_active(self, conn: AsyncConnection[Any]) -> list[ActiveAlert]:
        """The active alerts, from the database."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT id, indicator, entity, district, severity, value, threshold, "
                "opened_at, normal_count FROM alerts WHERE state = 'active'"
            )
            rows = await cur.fetchall()
        return [
            ActiveAlert(
                id=r["id"],
                indicator=r["indicator"],
                entity=r["entity"],
                district=r["district"],
                severity=SEVERITY.get(r["severity"], Status.ATTENTION),
                value=r["value"],
                threshold=r["threshold"],
                opened_at=r["opened_at"],
                normal_count=r["normal_count"],
            )
            for r in rows
        ]

    async def evaluate(
        self, conn: AsyncConnection[Any], checks: tuple[EntityCheck, ...], now: datetime
    ) -> None:
        """Open, escalate and clear alerts for one snapshot, in one transaction."""
        async with conn.transaction():
            active = {(a.indicator, a.entity): a for a in await self.load_active(conn)}
            async with conn.cursor() as cur:
                for c in checks:
                    key = (c.indicator, c.entity)
                    if c.status == Status.NORMAL and key not in active:
                        # The common case by far: nothing to open, nothing to clear.
                        self._last_ts.pop(key, None)
                        continue
                    new_reading = key in self._last_ts and self._last_ts[key] != c.newest
                    self._last_ts[key] = c.newest
                    alert = active.get(key)
                    if alert is None:
                        if c.status > Status.NORMAL:
                            await cur.execute(
                                "INSERT INTO alerts (indicator, entity, district, severity, "
                                "value, threshold, state, opened_at, updated_at, normal_count) "
                                "VALUES (%s, %s, %s, %s, %s, %s, 'active', %s, %s, 0) "
                                "ON CONFLICT (indicator, entity) WHERE state = 'active' "
                                "DO NOTHING",
                                (
                                    c.indicator,
                                    c.entity,
                                    c.district,
                                    c.status.label,
                                    c.value,
                                    c.threshold,
                                    now,
                                    now,
                                ),
                            )
                        continue
                    if c.status > alert.severity:
                        await cur.execute(
                            "UPDATE alerts SET severity = %s, value = %s, threshold = %s, "
                            "updated_at = %s, normal_count = 0 WHERE id = %s",
                            (c.status.label, c.value, c.threshold, now, alert.id),
                        )
                    elif c.status > Status.NORMAL:
                        if alert.normal_count:
                            await cur.execute(
                                "UPDATE alerts SET normal_count = 0, updated_at = %s WHERE id = %s",
                                (now, alert.id),
                            )
                    elif c.clear:
                        await self._clear(cur, alert.id, now, alert.normal_count)
                    elif new_reading:
                        count = alert.normal_count + 1
                        if count >= CLEAR_AFTER_NORMAL:
                            await self._clear(cur, alert.id, now, count)
                        else:
                            await cur.execute(
                                "UPDATE alerts SET normal_count = %s, updated_at = %s "
                                "WHERE id = %s",
                                (count, now, alert.id),
                            )
            self.active = await self.load_active(conn)

    @staticmethod
    async def _clear(cur: Any, alert_id: int, now: datetime, normal_count: int) -> None:
        await cur.execute(
            "UPDATE alerts SET state = 'cleared', cleared_at = %s, updated_at = %s, "
            "normal_count = %s WHERE id = %s AND state = 'active'",
            (now, now, normal_count, alert_id),
        )
