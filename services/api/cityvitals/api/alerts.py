"""Alerts: per-site and per-device threshold crossings, opened, escalated and cleared.

Each snapshot's entity checks are compared with the active alerts in the `alerts`
table (the database is the truth, so several API processes agree):

- a check worse than normal with no active alert opens one;
- a check worse than the alert's severity escalates it (severity only goes up while
  the alert is active; `value` and `threshold` record the latest escalation);
- a check back to normal clears the alert when the value is past the lowest threshold
  by `indicators.base.HYSTERESIS_MARGIN` (5 % of that threshold), or else after two
  consecutive normal *readings* (the entity's newest reading time must advance
  between the two evaluations, so a quiet device cannot clear by being re-read);
- an entity that stops reporting keeps its alert: no news is not good news.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

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
        # Moves on when `active` changes (by this evaluation or another process's);
        # None until `active` has been read.
        self.version: int | None = None
        # The keys of `active` at a version.
        self._known: tuple[int | None, set[tuple[str, str]]] = (None, set())

    async def load_active(self, conn: AsyncConnection[Any]) -> list[ActiveAlert]:
        """The active alerts, from the database."""
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT id, indicator, entity, district, severity, value, threshold, "
                "opened_at, normal_count FROM alerts WHERE state = 'active'"
            )
            rows = await cur.fetchall()
        return [
            ActiveAlert(i, ind, ent, d, SEVERITY.get(sev, Status.ATTENTION), v, th, at, n)
            for (i, ind, ent, d, sev, v, th, at, n) in rows
        ]

    async def current(self, conn: AsyncConnection[Any]) -> list[ActiveAlert]:
        """The active alerts as the last evaluation left them (read once at first)."""
        if self.version is None:
            self.active = await self.load_active(conn)
            self.version = 1
        return self.active

    async def evaluate(
        self,
        conn: AsyncConnection[Any],
        checks: Sequence[EntityCheck],
        now: datetime,
        *,
        partial: bool = False,
    ) -> None:
        """Open, escalate and clear alerts for one snapshot, in one transaction.

        `partial`: `checks` are only those that changed since the last evaluation (an
        unchanged check against an unchanged alert has nothing left to do), and when
        none of them is past normal or about an active alert as last read, the table
        is not read at all."""
        if partial:
            if self._known[0] != self.version:
                self._known = (self.version, {(a.indicator, a.entity) for a in self.active})
            known = self._known[1]
            if not any(
                c.status > Status.NORMAL or (c.indicator, c.entity) in known for c in checks
            ):
                for c in checks:
                    self._last_ts.pop((c.indicator, c.entity), None)
                return
        opened: list[tuple[Any, ...]] = []
        escalated: list[tuple[Any, ...]] = []
        counted: list[tuple[Any, ...]] = []
        cleared: list[tuple[Any, ...]] = []
        async with conn.transaction():
            active = {(a.indicator, a.entity): a for a in await self.load_active(conn)}
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
                        opened.append(
                            (
                                c.indicator,
                                c.entity,
                                c.district,
                                c.status.label,
                                c.value,
                                c.threshold,
                                now,
                                now,
                            )
                        )
                    continue
                if c.status > alert.severity:
                    escalated.append((c.status.label, c.value, c.threshold, now, alert.id))
                elif c.status > Status.NORMAL:
                    if alert.normal_count:
                        counted.append((0, now, alert.id))
                elif c.clear:
                    cleared.append((now, now, alert.normal_count, alert.id))
                elif new_reading:
                    count = alert.normal_count + 1
                    if count >= CLEAR_AFTER_NORMAL:
                        cleared.append((now, now, count, alert.id))
                    else:
                        counted.append((count, now, alert.id))
            # One statement per kind of change, pipelined: a storm of thousands of
            # alerts costs a few round trips, not one per alert.
            async with conn.cursor() as cur:
                if opened:
                    await cur.executemany(
                        "INSERT INTO alerts (indicator, entity, district, severity, value, "
                        "threshold, state, opened_at, updated_at, normal_count) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 'active', %s, %s, 0) "
                        "ON CONFLICT (indicator, entity) WHERE state = 'active' DO NOTHING",
                        opened,
                    )
                if escalated:
                    await cur.executemany(
                        "UPDATE alerts SET severity = %s, value = %s, threshold = %s, "
                        "updated_at = %s, normal_count = 0 WHERE id = %s",
                        escalated,
                    )
                if counted:
                    await cur.executemany(
                        "UPDATE alerts SET normal_count = %s, updated_at = %s WHERE id = %s",
                        counted,
                    )
                if cleared:
                    await cur.executemany(
                        "UPDATE alerts SET state = 'cleared', cleared_at = %s, updated_at = %s, "
                        "normal_count = %s WHERE id = %s AND state = 'active'",
                        cleared,
                    )
            changed = opened or escalated or counted or cleared
            before = self.active
            self.active = await self.load_active(conn) if changed else list(active.values())
        if self.version is None or changed or set(before) != set(self.active):
            self.version = (self.version or 0) + 1
        # Only active alerts need the newest reading time of their entity remembered.
        keep = {(a.indicator, a.entity) for a in self.active}
        self._last_ts = {k: v for k, v in self._last_ts.items() if k in keep}
