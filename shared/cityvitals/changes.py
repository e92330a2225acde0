"""The change log (`vitals_changes`): which devices each transaction changed.

Triggers on the tables a device's state in the vital signs is made of (the registry,
`device_state`, the `latest_*` tables, the daily aggregates, drop-off events) add one
row per statement: the devices it wrote, or NULL for "anything may have changed" (a
TRUNCATE, a rebuild). So no writer can forget it — the collectors' batches, the
registry, a rebuild, an operator's own SQL. The API keeps the city's state in memory
and, once a second, reads only the rows of the transactions it has not seen yet, then
the current state of just those devices (`cityvitals.api.fleet`). A batch appends a
few rows, never one per device, and two collectors never wait for each other here.

Which rows are new is told by transaction id, not by time or by `id`: a transaction
that began before the API's last read but committed after it has a smaller `id` than
rows already read. Every transaction not visible to a snapshot has an id at or above
that snapshot's `xmin`, so "`xid` >= the previous read's xmin" misses none; the few
rows it reads twice are harmless, as folding a device's current state is idempotent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

# How long rows are kept. An API whose last read is older than half of this reloads
# everything instead of trusting the log (see `cityvitals.api.fleet`).
CHANGES_RETENTION = timedelta(minutes=10)

LOG_EVERYTHING = "INSERT INTO vitals_changes (devices) VALUES (NULL)"
PRUNE = "DELETE FROM vitals_changes WHERE at < now() - %s::interval"


def log_everything(conn: psycopg.Connection[Any]) -> None:
    """Note, in the caller's transaction, that any device may have changed."""
    conn.execute(LOG_EVERYTHING)


def prune(conn: psycopg.Connection[Any]) -> int:
    """Delete the rows older than `CHANGES_RETENTION`; how many."""
    return conn.execute(PRUNE, (CHANGES_RETENTION,)).rowcount
