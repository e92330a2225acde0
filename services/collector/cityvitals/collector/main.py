"""The collector: MQTT in, batches into the database, acknowledgements out.

A QoS 1 message is acknowledged only after the batch holding it is committed
(docs/wire.md, delivery guarantee), so the broker keeps every message the collector
has not durably handled. The unacknowledged window is the MQTT 5 Receive Maximum,
which also bounds what the collector holds in memory while the database is away.

Database errors are told apart where they are caught: an outage (connection lost,
server shutting down) is waited out with back-off and shows as `database_up 0`; a
refusal of the data is isolated by the write path and dead-lettered as `unstorable`;
a conflict with another collector is retried at once. docs/ingestion.md has the
table of faults and what the operator sees for each.
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
from collections.abc import Callable
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
from cityvitals.collector.group import HEARTBEAT_S, SYS_VERSION, Membership, choose
from cityvitals.collector.mqttclient import CollectorClient
from cityvitals.payloads import Message
from cityvitals.reasons import Reason, Rejection
from cityvitals.settings import CollectorSettings
from cityvitals.startup import StartupError, check_broker, check_database, is_transient
from cityvitals.store import BatchResult, BatchWriter, Incoming, limits_from
from cityvitals.topics import subscription

log = structlog.get_logger("cityvitals.collector")

# MQTT 5 §3.14.2.1 reason code 0x8E: another client connected with our client id.
SESSION_TAKEN_OVER = 0x8E
# How often an idle collector checks that the database still answers.
DB_PROBE_INTERVAL_S = 5.0
# How long the broker has to answer $SYS/broker/version before it counts as unknown.
VERSION_WAIT_S = 3.0
# A leaving collector's queue is empty once nothing arrives for this long after its
# last acknowledgement (the broker sends queued messages as soon as acks free room).
DRAIN_QUIET_S = 1.0
# CONNACK reason codes that no retry can fix (MQTT 5 §3.2.2.2).
AUTH_REFUSED = {0x86: "bad user name or password", 0x87: "not authorized"}
# SQLSTATE classes of a lost or unusable server (PostgreSQL appendix A): connection
# exception, operator intervention (shutdown), insufficient resources, system error.
OUTAGE_CLASSES = ("08", "57", "53", "58")


def is_outage(err: psycopg.Error) -> bool:
    """Whether a database error means the server is away (wait) rather than a bug."""
    if not isinstance(err, psycopg.OperationalError):
        return False
    return not err.sqlstate or err.sqlstate[:2] in OUTAGE_CLASSES


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
    # What the message parsed to on receipt (None: to be parsed with its batch).
    parsed: Message | Rejection | None
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
        self.membership = Membership(self.client_id)
        self._last_heartbeat = float("-inf")
        # Decided on the first connection from what the broker says it is.
        self.topic: str | None = None
        self._topic_lock = threading.Lock()
        self._main_sub_mid: int | None = None
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.connack = threading.Event()
        self.connack_refusal: str | None = None
        self.last_message = time.monotonic()
        self.client = self._make_client(self.client_id)

    # --- MQTT -------------------------------------------------------------------------

    def _make_client(self, client_id: str) -> CollectorClient:
        client = CollectorClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            tuned=self.settings.mqtt_tuned,
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
        client.on_publish_raw = self._on_publish_raw
        # The receive window holds even where the broker does not keep to it.
        client.pause_reading = self._window_full
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.message_callback_add(SYS_VERSION, self._on_version)
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
            refusal = AUTH_REFUSED.get(reason.value)
            if refusal and not self.connack.is_set():
                self.connack_refusal = refusal
            log.error("mqtt_connect_refused", reason=str(reason))
            self.connack.set()
            return
        self.connected = True
        self.connack.set()
        log.info(
            "mqtt_connected",
            client_id=self.client_id,
            session_present=flags.session_present,
            generation=self.generation,
        )
        if self.topic is not None:
            self._subscribe(client, self.topic)
            return
        # First connection: the broker's version decides the subscription.
        client.subscribe(SYS_VERSION, qos=0)
        timer = threading.Timer(VERSION_WAIT_S, self._decide, args=(None,))
        timer.daemon = True
        timer.start()

    def _on_version(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._decide(bytes(msg.payload).decode(errors="replace"))

    def _decide(self, version_text: str | None) -> None:
        """Choose shared or plain once, warn where that can lose, and subscribe."""
        with self._topic_lock:
            if self.topic is not None:
                return
            group = self.settings.share_group
            choice = choose(self.settings.shared_subscription, group, version_text)
            self.topic = subscription(self.settings.topic_prefix, group if choice.shared else None)
            other = subscription(self.settings.topic_prefix, None if choice.shared else group)
        metrics.SHARED.set(1 if choice.shared else 0)
        if choice.warning:
            log.warning(
                "subscription_can_lose" if choice.shared else "subscription_plain",
                broker=choice.broker,
                detail=choice.warning,
            )
        log.info("subscription_chosen", subscription=self.topic, broker=choice.broker)
        self.client.unsubscribe(SYS_VERSION)
        if group and other != self.topic:
            # A session from a run with the other choice must not keep that filter.
            self.client.unsubscribe(other)
        self._subscribe(self.client, self.topic)

    def _subscribe(self, client: mqtt.Client, topic: str) -> None:
        result, mid = client.subscribe(topic, qos=1)
        if result == mqtt.MQTT_ERR_SUCCESS:
            self._main_sub_mid = mid

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._main_sub_mid:
            return
        if any(r.is_failure for r in reasons):
            log.error("mqtt_subscribe_refused", reasons=[str(r) for r in reasons])
            return
        # Connected and subscribed: from here on nothing published is missed.
        metrics.MQTT_CONNECTED.set(1)
        self.subscribed.set()
        log.info("mqtt_subscribed", subscription=self.topic)

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.unsubscribed.set()

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
        self.subscribed.clear()
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
        self._received(_topic_text(msg), bytes(msg.payload), msg.mid, msg.qos)

    def _on_publish_raw(self, topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        """A PUBLISH cut straight from the receive buffer (cityvitals.mqttfast)."""
        try:
            text = topic.decode()
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; keep the bytes visible for the dead letter.
            text = repr(topic)
        self._received(text, payload, mid, qos)

    def _window_full(self) -> bool:
        """Whether the collector holds a whole receive window not yet taken by the writer."""
        return len(self.pending) >= self.settings.receive_maximum

    def _received(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """Queue a message for its batch, parsed here on the network thread: the writer
        thread is then free for the database while the next batch comes in."""
        now = time.monotonic()
        self.last_message = now
        incoming = Incoming(topic, payload, datetime.now(UTC))
        try:
            parsed: Message | Rejection | None = self.writer.parse_one(incoming)
        except Exception:  # parsed again with its batch, where any error is handled
            parsed = None
        self.pending.append(Pending(self.generation, mid, qos, incoming, parsed, now))
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
                result = self.writer.write(
                    self._connection(), [p.incoming for p in batch], [p.parsed for p in batch]
                )
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as err:
                # Another collector stored readings of the same devices at the same
                # moment; nothing of this batch was kept. Retry at once.
                metrics.CONFLICTS.inc()
                log.info("batch_conflict_retry", error=type(err).__name__)
                continue
            except psycopg.Error as err:
                metrics.DB_ERRORS.inc()
                if is_outage(err):
                    self._database_up(False, str(err))
                    log.warning(
                        "database_unavailable",
                        error=str(err).strip()[:300],
                        retry_in_s=round(delay, 2),
                        buffered=len(self.pending) + len(batch),
                    )
                else:
                    # The server answers but fails the statements (a schema that is
                    # not migrated, a bug): not an outage, and not the data's fault
                    # (refusals are isolated by the write path). The messages stay
                    # unacknowledged until it is fixed.
                    log.error(
                        "batch_failed",
                        error=str(err).strip()[:300],
                        sqlstate=err.sqlstate,
                        kind=type(err).__name__,
                        hint="run `cityvitals migrate`, or report the error",
                        retry_in_s=round(delay, 2),
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
            if result.refusals:
                log.warning(
                    "messages_unstorable",
                    dead_lettered=result.rejected.get(Reason.UNSTORABLE, 0),
                    refused_attempts=result.refusals,
                    batch=len(batch),
                    seconds=round(time.perf_counter() - started, 3),
                )
            self._heartbeat()
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
        metrics.ACK_LAG.observe_many([now - p.monotonic for p in batch])
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
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Tell the other collectors that this one is alive (at most every few seconds)."""
        now = time.monotonic()
        if self.topic is None or now - self._last_heartbeat < HEARTBEAT_S:
            return
        self._last_heartbeat = now
        try:
            self.membership.heartbeat(self._connection(), self.topic)
            self._connection().commit()
        except psycopg.Error as err:
            log.info("heartbeat_failed", error=str(err).strip()[:200])
            self._drop_connection()

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
        """Connect, then store batches until asked to stop; then leave or keep the session."""
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
        left = False
        try:
            self._wait_for_connack()
            while not self.stopping.is_set():
                self._wait_for_batch()
                if self.stopping.is_set():
                    break
                batch = self._take()
                if batch and self._write(batch):
                    self._ack(batch)
            left = self._leave_or_flush()
        finally:
            if left:
                self._end_session()
            else:
                self.client.disconnect()
            self.client.loop_stop()
            self._drop_connection()
            metrics.MQTT_CONNECTED.set(0)
            log.info(
                "collector_stopped",
                left_group=left,
                received=self.totals.received,
                stored=sum(self.totals.stored.values()),
                duplicates=sum(self.totals.duplicates.values()),
                rejected=sum(self.totals.rejected.values()),
            )
        return 0

    def _wait_for_connack(self) -> None:
        """A broker that refuses our credentials is a start-up mistake, not an outage."""
        self.connack.wait(self.settings.startup_wait_s)
        if self.connack_refusal:
            raise StartupError(
                f"the MQTT broker refused the login ({self.connack_refusal})",
                "check the user and password in CITYVITALS_MQTT_URL and the broker's ACL",
            )

    def _leave_or_flush(self) -> bool:
        """On SIGTERM: leave the group for good while another member is alive, else keep
        the session (and its queue) for the next start. Says whether it left."""
        try:
            leave = self.connected and self.membership.may_leave(self._connection())
        except psycopg.Error as err:
            log.warning("leave_check_failed", error=str(err).strip()[:200])
            self._drop_connection()
            leave = False
        if not leave:
            self._flush()
            self._record_stop(left=False)
            return False
        log.info("leaving_group", subscription=self.topic, others_alive=True)
        self.unsubscribed.clear()
        if self.topic is not None:
            self.client.unsubscribe(self.topic)
        self.unsubscribed.wait(5)
        drained = self._drain()
        self._record_stop(left=drained)
        return drained

    def _drain(self) -> bool:
        """Store and acknowledge what the broker queued for us until nothing more comes."""
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while time.monotonic() < deadline:
            if self.pending:
                batch = self._take()
                if not self._write_once(batch):
                    return False
                self._ack(batch)
                continue
            if not self.connected:
                return False
            if time.monotonic() - self.last_message >= DRAIN_QUIET_S:
                return True
            self.wake.wait(0.05)
            self.wake.clear()
        log.warning(
            "drain_timeout", left=len(self.pending), hint="raise CITYVITALS_DRAIN_TIMEOUT_S"
        )
        return False

    def _end_session(self) -> None:
        """Disconnect and have the broker discard our session: nothing waits for us."""
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        # MQTT 5 §3.14.2.2.2: a Session Expiry Interval of 0 in DISCONNECT ends it now.
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)

    def _record_stop(self, *, left: bool) -> None:
        try:
            self.membership.stopped(self._connection(), left=left)
        except psycopg.Error as err:
            log.info("stop_record_failed", error=str(err).strip()[:200])

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
            result = self.writer.write(
                self._connection(), [p.incoming for p in batch], [p.parsed for p in batch]
            )
        except psycopg.Error as err:
            log.warning("flush_failed", error=str(err).strip()[:300], left=len(batch))
            self._drop_connection()
            return False
        metrics.record(result)
        self.totals.add(result)
        return True

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Ask the loop to stop (signal handler)."""
        log.info("collector_stopping", signal=signum)
        self.stopping.set()
        self.wake.set()


def _wait_for(what: str, check: Callable[[], None], wait_s: float) -> None:
    """Run a start-up check; while its server is unreachable, retry until `wait_s`.

    The first failure is logged once (one line saying what to do); a mistake no wait
    can fix (a refused login, a missing database) is raised at once.
    """
    deadline = time.monotonic() + wait_s
    warned = False
    while True:
        try:
            check()
            return
        except StartupError as err:
            if not is_transient(err) or time.monotonic() >= deadline:
                raise
            if not warned:
                log.warning(
                    f"{what}_unreachable", detail=f"{err.what}: {err.fix}", waiting_s=wait_s
                )
                warned = True
        time.sleep(1.0)


def _check_schema(dsn: str) -> None:
    check_database(dsn)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT to_regclass('collectors') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise StartupError(
            "the database is not migrated to this version", "run `cityvitals migrate` first"
        )


def run(settings: CollectorSettings) -> int:
    """Entry point of `cityvitals collector`; start-up mistakes raise StartupError."""
    target = settings.mqtt
    _wait_for("database", lambda: _check_schema(settings.psycopg_dsn), settings.startup_wait_s)
    _wait_for("broker", lambda: check_broker(target.host, target.port), settings.startup_wait_s)
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as err:
            raise StartupError(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
                f"({err.strerror})",
                "set CITYVITALS_METRICS_PORT to a free port (0 disables it)",
            ) from None
    collector = Collector(settings)
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    return collector.run()
