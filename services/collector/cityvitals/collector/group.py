"""Which subscription a collector takes, and when it may leave it.

Mosquitto before 2.1 does not keep a shared subscription (`$share/…`) across its own
restart: readings published before the collectors subscribe again match nothing and
are dropped. Mosquitto 2.1 with its persist-sqlite plugin keeps it. `choose()` reads
the broker's `$SYS/broker/version` and takes the shared subscription only where it is
kept (`auto`), so that the default configuration loses nothing on either broker.

A member of a shared subscription that is gone but whose session lives on still gets
its round-robin share of the messages, which then wait for it at the broker. So a
collector stopped with SIGTERM leaves for good (unsubscribes, stores what is already
queued for it, ends its session) while another member is alive — and the last one
keeps its session, so a restart of a lone collector loses nothing. The `collectors`
table (heartbeats) tells who is alive; the decision is taken under an advisory lock,
so two collectors stopping at once never both leave.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Literal

import psycopg

from cityvitals.changes import prune

SYS_VERSION = "$SYS/broker/version"
_MOSQUITTO_VERSION = re.compile(r"mosquitto version (\d+)\.(\d+)(?:\.(\d+))?")
# Mosquitto 2.1 is the first that restores shared subscriptions (with persist-sqlite).
KEEPS_SHARED_FROM = (2, 1)
# A member is alive while its heartbeat is younger than this.
ALIVE_S = 15.0
HEARTBEAT_S = 5.0
# Serialises the leave decisions of one deployment ("CVGR").
_GROUP_LOCK_KEY = 0x43_56_47_52


@dataclass(frozen=True, slots=True)
class Choice:
    """The subscription taken, and a warning for the operator when it can lose."""

    shared: bool
    broker: str
    warning: str | None


def broker_keeps_shared(version_text: str | None) -> bool | None:
    """True/False for a Mosquitto version string, None when the broker did not say."""
    if not version_text:
        return None
    m = _MOSQUITTO_VERSION.search(version_text)
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2))) >= KEEPS_SHARED_FROM


def choose(mode: Literal["auto", "on", "off"], group: str, version_text: str | None) -> Choice:
    """Apply CITYVITALS_SHARED_SUBSCRIPTION to what the broker said it is."""
    broker = version_text or "unknown broker"
    keeps = broker_keeps_shared(version_text)
    if mode == "off" or not group:
        return Choice(False, broker, None)
    if mode == "on":
        if keeps:
            return Choice(True, broker, None)
        why = (
            "does not keep shared subscriptions across its restart"
            if keeps is False
            else "did not say whether it keeps shared subscriptions across its restart"
        )
        return Choice(
            True,
            broker,
            f"shared subscription on {broker}, which {why}: readings published while "
            "it restarts can be lost; use Mosquitto 2.1 with persist-sqlite or "
            "CITYVITALS_SHARED_SUBSCRIPTION=auto",
        )
    if keeps:
        return Choice(True, broker, None)
    why = (
        "does not keep shared subscriptions across its restart"
        if keeps is False
        else f"did not answer {SYS_VERSION}"
    )
    return Choice(
        False,
        broker,
        f"{broker} {why}: subscribing without a share group, so every collector stores "
        "every reading (duplicates are absorbed, nothing is lost); to split the load "
        "between collectors use Mosquitto 2.1 with persist-sqlite",
    )


class Membership:
    """This collector's row in `collectors`: heartbeats and the leave decision."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.subscription: str | None = None

    def heartbeat(self, conn: psycopg.Connection, subscription: str) -> None:
        """Say that this collector is alive on `subscription` (the caller commits)."""
        self.subscription = subscription
        conn.execute(
            "INSERT INTO collectors AS c (client_id, subscription, host, pid, started_at, "
            "seen_at) VALUES (%s, %s, %s, %s, now(), now()) "
            "ON CONFLICT (client_id) DO UPDATE SET subscription = excluded.subscription, "
            "host = excluded.host, pid = excluded.pid, seen_at = now(), "
            "started_at = CASE WHEN c.stopped_at IS NOT NULL OR c.left_at IS NOT NULL "
            "THEN now() ELSE c.started_at END, stopped_at = NULL, left_at = NULL",
            (self.client_id, subscription, socket.gethostname(), os.getpid()),
        )
        # The change log's old rows go with the heartbeat, API or not (indexed by `at`).
        prune(conn)

    def may_leave(self, conn: psycopg.Connection) -> bool:
        """Whether another member is alive; if so, mark this one as leaving (commits)."""
        if self.subscription is None:
            return False
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GROUP_LOCK_KEY,))
            row = conn.execute(
                "SELECT count(*) FROM collectors WHERE subscription = %s AND client_id <> %s "
                "AND stopped_at IS NULL AND left_at IS NULL "
                "AND seen_at > now() - make_interval(secs => %s)",
                (self.subscription, self.client_id, ALIVE_S),
            ).fetchone()
            others = int(row[0]) if row else 0
            if others:
                conn.execute(
                    "UPDATE collectors SET left_at = now() WHERE client_id = %s",
                    (self.client_id,),
                )
        conn.commit()
        return others > 0

    def stopped(self, conn: psycopg.Connection, *, left: bool) -> None:
        """Record a clean stop: gone for good (`left`), or keeping its session."""
        if left:
            conn.execute("DELETE FROM collectors WHERE client_id = %s", (self.client_id,))
        else:
            conn.execute(
                "UPDATE collectors SET stopped_at = now() WHERE client_id = %s",
                (self.client_id,),
            )
        conn.commit()
