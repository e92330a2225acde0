"""The collector: MQTT in, batches into the database, acknowledgements out.

A QoS 1 message is acknowledged only after the batch holding it is committed (SPEC
§2), so the broker keeps every message the collector has not durably handled. The
unacknowledged window is the MQTT 5 Receive Maximum, which also bounds what the
collector holds in memory while the database is away.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityvitals.collector import metrics
from cityvitals.collector.mqttclient import CollectorClient
from cityvitals.settings import CollectorSettings
from cityvitals.store import BatchResult, BatchWriter, Incoming, limits_from
from cityvitals.topics import subscription

log = structlog.get_logger("cityvitals.collector")

# MQTT 5 §3.14.2.1 reason code 0x8E: another client connected with our client id.
SESSION_TAKEN_OVER = 0x8E
# How often an idle collector checks that the database still answers.
DB_PROBE_INTERVAL_S = 5.0


def default_client_id(settings: CollectorSettings) -> str:
    """A client id that is the same after a restart and differs between collectors.

    The persistent session is found again by client id, so it must survive restarts;
    collectors on one host differ in their metrics port, which must be unique there.
    """
    base = f"cityvitals-collector-{socket.gethostname()}"
    return f"{base}-{settings.metrics_port}" if settings.metrics_port else base


@dataclass(frozen=True, slots=True)
class Pending:
    """A received message waiting for its batch to commit."""

    generation: int
    mid: int
    qos: int
    incoming: Incoming
    monotonic: float


def _topic_text(msg: mqtt.MQTTMessage) -> str:
    try:
        return msg.topic
    except UnicodeDecodeError:
        # MQTT requires UTF-8 topics; keep the bytes visible for the dead letter.
        return repr(msg._topic)


class Collector:
    """One collector process: a paho network thread feeding a batching writer loop."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.client_id = settings.client_id or default_client_id(settings)
        self.writer = BatchWriter(
            prefix=settings.topic_prefix,
            limits=limits_from(
                settings.max_payload_bytes, settings.clock_skew_s, settings.too_old_s
            ),
            local_tz=settings.local_tz,
            collector=self.client_id,
        )
        self.pending: deque[Pending] = deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        # Bumped on every disconnect: packet ids of an older connection must never be
        # acknowledged on a newer one, where the broker may have reused them.
        self.generation = 0
        self.ack_lock = threading.Lock()
        self.connected = False
        self.conn: psycopg.Connection | None = None
        self._last_probe = float("-inf")
        self.db_up: bool | None = None
        self.totals = BatchResult()
        self.client = self._make_client(self.client_id)

    # --- MQTT -------------------------------------------------------------------------

    def _make_client(self, client_id: str) -> CollectorClient:
        client = CollectorClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        target = self.settings.mqtt
        if target.username:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            client.tls_set()
        client.reconnect_delay_set(
            min_delay=max(1, int(self.settings.reconnect_min_s)),
            max_delay=max(1, int(self.settings.reconnect_max_s)),
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # MQTT 5 §3.1.2.11.2: keep the session (and its queued messages) while away.
        props.SessionExpiryInterval = self.settings.session_expiry_s
        # MQTT 5 §3.1.2.11.3: how many unacknowledged QoS 1/2 messages we accept.
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt_connect_refused", reason=str(reason))
            return
        self.connected = True
        topic = subscription(self.settings.topic_prefix, self.settings.share_group or None)
        client.subscribe(topic, qos=1)
        log.info(
            "mqtt_connected",
            client_id=self.client_id,
            session_present=flags.session_present,
            subscription=topic,
            generation=self.generation,
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error("mqtt_subscribe_refused", reasons=[str(r) for r in reasons])
            return
        # Connected and subscribed: from here on nothing published is missed.
        metrics.MQTT_CONNECTED.set(1)
        log.info("mqtt_subscribed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self.ack_lock:
            self.generation += 1
        self.connected = False
        metrics.MQTT_CONNECTED.set(0)
        if self.stopping.is_set():
            return
        metrics.RECONNECTS.labels(target="mqtt").inc()
        log.warning("mqtt_disconnected", reason=str(reason), generation=self.generation)
        if reason.value == SESSION_TAKEN_OVER:
            # Another collector started with our client id and now owns our session
            # (and every unacknowledged message in it, so nothing is lost). Two
            # collectors taking the id from each other would never settle: step aside
            # under an id of our own and start a new session.
            taken = self.client_id
            self.client_id = f"{taken}-{os.getpid()}"
            self.client._client_id = self.client_id.encode()
            log.error(
                "mqtt_client_id_in_use",
                client_id=taken,
                now_using=self.client_id,
                hint="give each collector its own CITYVITALS_CLIENT_ID",
            )

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.pending.append(
            Pending(
                self.generation,
                msg.mid,
                msg.qos,
                Incoming(_topic_text(msg), bytes(msg.payload), datetime.now(UTC)),
                time.monotonic(),
            )
        )
        if len(self.pending) >= self.settings.batch_max:
            self.wake.set()

    # --- database ---------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                self.settings.psycopg_dsn,
                connect_timeout=5,
                application_name=f"cityvitals-collector:{self.client_id}",
            )
            metrics.RECONNECTS.labels(target="database").inc()
            log.info("database_connected")
        return self.conn

    def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _write(self, batch: list[Pending]) -> bool:
        """Store a batch, retrying with back-off while the database is away."""
        delay = self.settings.db_retry_min_s
        while True:
            started = time.perf_counter()
            try:
                result = self.writer.write(self._connection(), [p.incoming for p in batch])
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as err:
                # Another collector stored readings of the same devices at the same
                # moment; nothing of this batch was kept. Retry at once.
                metrics.CONFLICTS.inc()
                log.info("batch_conflict_retry", error=type(err).__name__)
                continue
            except psycopg.Error as err:
                if not isinstance(err, psycopg.OperationalError):
                    # Not a fault of the connection: a bug or a schema problem. Log it
                    # loudly and keep retrying; the messages stay unacknowledged.
                    log.error("batch_failed", error=str(err), kind=type(err).__name__)
                self._database_up(False, str(err))
                metrics.DB_ERRORS.inc()
                log.warning(
                    "database_unavailable",
                    error=str(err).strip()[:300],
                    retry_in_s=round(delay, 2),
                    buffered=len(self.pending) + len(batch),
                )
                self._drop_connection()
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.db_retry_max_s) * (0.8 + 0.4 * random.random())  # noqa: S311
                continue
            self._database_up(True)
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.record(result)
            self.totals.add(result)
            return True

    def _ack(self, batch: list[Pending]) -> None:
        now = time.monotonic()
        # Held against _on_disconnect: an ack is queued on the connection its packet id
        # came from, or not at all (the broker then re-delivers, and keys absorb it).
        with self.ack_lock:
            gen = self.generation
            qos1: list[int] = []
            for p in batch:
                if p.generation == gen:
                    if p.qos == 1:
                        qos1.append(p.mid)
                    elif p.qos == 2:
                        self.client.ack(p.mid, p.qos)
            self.client.ack_many(qos1)
        for p in batch:
            metrics.ACK_LAG.observe(now - p.monotonic)
        metrics.LAST_COMMIT.set(time.time())

    # --- main loop --------------------------------------------------------------------

    def _take(self) -> list[Pending]:
        n = min(len(self.pending), self.settings.batch_max)
        return [self.pending.popleft() for _ in range(n)]

    def _wait_for_batch(self) -> None:
        age = self.settings.batch_age_ms / 1000
        while not self.stopping.is_set():
            metrics.BUFFER.set(len(self.pending))
            if len(self.pending) >= self.settings.batch_max:
                return
            if self.pending:
                remaining = age - (time.monotonic() - self.pending[0].monotonic)
                if remaining <= 0:
                    return
                self.wake.wait(remaining)
            else:
                self._probe_database()
                self.wake.wait(0.5)
            self.wake.clear()

    def _probe_database(self) -> None:
        """While idle, keep `database_up` true to the facts (alerts read it)."""
        now = time.monotonic()
        if now - self._last_probe < DB_PROBE_INTERVAL_S:
            return
        self._last_probe = now
        try:
            self._connection().execute("SELECT 1")
            self._connection().rollback()
        except psycopg.Error as err:
            self._database_up(False, str(err))
            self._drop_connection()
            return
        self._database_up(True)

    def _database_up(self, up: bool, error: str = "") -> None:
        """Record the database's state; log only the changes."""
        metrics.DATABASE_UP.set(1 if up else 0)
        if up != self.db_up:
            if up:
                log.info("database_up")
            else:
                log.warning("database_down", error=error.strip()[:300])
        self.db_up = up

    def run(self) -> int:
        """Connect, then store batches until asked to stop; flush and disconnect."""
        target = self.settings.mqtt
        log.info(
            "collector_starting",
            client_id=self.client_id,
            broker=f"{target.host}:{target.port}",
            receive_maximum=self.settings.receive_maximum,
            batch_max=self.settings.batch_max,
        )
        self.client.connect_async(
            target.host,
            target.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self.client.loop_start()
        try:
            while not self.stopping.is_set():
                self._wait_for_batch()
                if self.stopping.is_set():
                    break
                batch = self._take()
                if batch and self._write(batch):
                    self._ack(batch)
            self._flush()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self._drop_connection()
            metrics.MQTT_CONNECTED.set(0)
            log.info(
                "collector_stopped",
                received=self.totals.received,
                stored=sum(self.totals.stored.values()),
                duplicates=sum(self.totals.duplicates.values()),
                rejected=sum(self.totals.rejected.values()),
            )
        return 0

    def _flush(self) -> None:
        """On shutdown, store and acknowledge what is already here (bounded in time)."""
        deadline = time.monotonic() + 10
        while self.pending and time.monotonic() < deadline:
            batch = self._take()
            if not self._write_once(batch):
                break  # the broker still holds these: they were never acknowledged
            self._ack(batch)

    def _write_once(self, batch: list[Pending]) -> bool:
        try:
            result = self.writer.write(self._connection(), [p.incoming for p in batch])
        except psycopg.Error as err:
            log.warning("flush_failed", error=str(err).strip()[:300], left=len(batch))
            return False
        metrics.record(result)
        self.totals.add(result)
        return True

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Ask the loop to stop (signal handler)."""
        log.info("collector_stopping", signal=signum)
        self.stopping.set()
        self.wake.set()


def run(settings: CollectorSettings) -> int:
    """Entry point of `cityvitals collector`."""
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as err:
            log.error(
                "metrics_port_unavailable",
                port=settings.metrics_port,
                error=err.strerror,
                hint="set CITYVITALS_METRICS_PORT to a free port (0 disables it)",
            )
            return 2
    collector = Collector(settings)
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    return collector.run()
