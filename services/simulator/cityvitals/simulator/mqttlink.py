"""One paho-mqtt 2 connection driven from the simulator's own loop, fast enough for load.

paho's stock per-message path costs more than the broker does: measured on this
2-core machine, a single client reached about 12,000 QoS 1 msg/s, three quarters of
it in paho (docs/simulator.md). `FastClient` keeps paho for everything
protocol-level (CONNECT, keepalive, re-sending unacknowledged messages after a
reconnect, DISCONNECT) and replaces three hot spots, which lifts one client to about
50,000 msg/s:

- writes are gathered in a buffer and sent once per `pump()` instead of one
  `send()` per packet;
- reads take whatever the socket has in one `recv()`, where paho asks for 1 byte,
  then the length bytes, then the body (the collector's reader, shared in
  `cityvitals.mqttfast`);
- a PUBACK (MQTT 5 §3.4) is settled from its first three bytes; paho builds a
  `ReasonCode` and a `Properties` object per acknowledgement and, with an inflight
  limit set, re-scans its whole outgoing dict on each one.

These override private methods of paho-mqtt, so `cityvitals.mqttfast`'s guard allows
them only on the pinned paho with every private name they touch present; otherwise
(or with `tuned=False`, to measure stock paho) the client is stock paho and counts
acknowledgements through the public `on_publish` callback.

The client is single-threaded on purpose: paho's `loop_start()` thread fights the
publishing thread for the GIL and managed about 1,000 msg/s here.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityvitals.mqttfast import TunedClient
from cityvitals.settings import parse_mqtt_url

# Every QoS 1 packet id (MQTT 5 §2.2.1) is 16 bits, so at most 65,535 messages can
# await a PUBACK on one connection; the window stays well below that so paho never
# has to wait for a free id.
DEFAULT_WINDOW = 20_000
# Below this many buffered bytes `publish` leaves the flush to the next pump.
FLUSH_BYTES = 64 * 1024
# MQTT 5 §3.4.2.1: reason codes of 0x80 and above are failures.
_FAILURE = 0x80


class LinkError(RuntimeError):
    """The broker could not be reached or refused the connection."""


class FastClient(TunedClient):
    """A paho client whose socket writes are batched and whose PUBACKs are cheap."""

    EXTRA_METHODS: ClassVar[tuple[str, ...]] = ("_sock_send", "_handle_pubackcomp")
    EXTRA_STATE: ClassVar[tuple[str, ...]] = (
        "_out_messages",
        "_out_message_mutex",
        "_inflight_messages",
    )

    def __init__(self, client_id: str, *, tuned: bool = True) -> None:
        super().__init__(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            tuned=tuned,
        )
        self._wbuf = bytearray()
        self.acked = 0
        self.failed = 0
        # Stock paho: the QoS 1 packet ids still waiting for their PUBACK.
        self._unacked: set[int] = set()
        if not self.tuned:
            self.on_publish = self._count_puback

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not self.tuned:
            return super()._sock_send(buf)
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        self._wbuf += buf
        return len(buf)

    def _sock_close(self) -> None:
        # paho closes the socket right after "writing" DISCONNECT; that packet sits in
        # our buffer, and without it the broker would publish the will.
        if self._wbuf and isinstance(self._sock, socket.socket):
            with contextlib.suppress(OSError):
                self._sock.settimeout(2.0)
                self._sock.sendall(self._wbuf)
        self._wbuf.clear()
        super()._sock_close()

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        if cmd != "PUBACK" or not self.tuned:
            return super()._handle_pubackcomp(cmd)
        packet = self._in_packet["packet"]
        mid = (packet[0] << 8) | packet[1]
        reason = packet[2] if len(packet) > 2 else 0
        with self._out_message_mutex:
            message = self._out_messages.pop(mid, None)
            if message is not None:
                self._inflight_messages -= 1
                if reason >= _FAILURE:
                    self.failed += 1
                else:
                    self.acked += 1
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _count_puback(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        # paho also calls this when a QoS 0 message is written: only QoS 1 ids count.
        if mid in self._unacked:
            self._unacked.discard(mid)
            if reason.is_failure:
                self.failed += 1
            else:
                self.acked += 1

    def publish(
        self,
        topic: str,
        payload: mqtt.PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """paho's publish; with stock paho it also notes a QoS 1 id until its PUBACK."""
        info = super().publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if not self.tuned and qos and info.mid:
            self._unacked.add(info.mid)
        return info

    @property
    def outstanding(self) -> int:
        """QoS 1 messages sent and not yet acknowledged."""
        return len(self._out_messages) if self.tuned else len(self._unacked)

    def want_write(self) -> bool:
        """Whether bytes wait to be written: in our buffer, or in paho's queue."""
        return bool(self._wbuf) or super().want_write()

    def flush(self) -> bool:
        """Send what the socket takes now; whether everything went out."""
        if not self.tuned:
            if super().want_write():
                self.loop_write()
            return not super().want_write()
        if not self._wbuf:
            return True
        if self._sock is None:
            return False
        try:
            sent = self._sock.send(self._wbuf)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            # An SSL write that wants to be retried is retried with the same bytes
            # first; our buffer only grows at its end, which OpenSSL accepts.
            return False
        del self._wbuf[:sent]
        return not self._wbuf

    @property
    def pending_bytes(self) -> int:
        """Bytes written by paho and not yet handed to the socket (stock paho: 0)."""
        return len(self._wbuf)


@dataclass
class LinkStats:
    """What one connection has done."""

    published: int = 0
    errors: int = 0
    reconnects: int = 0


class Link:
    """A connection to the broker, pumped by its owner's loop (no background thread)."""

    def __init__(
        self,
        mqtt_url: str,
        client_id: str,
        *,
        window: int = DEFAULT_WINDOW,
        keepalive_s: int = 30,
        will: tuple[str, bytes] | None = None,
        tuned: bool = True,
    ) -> None:
        self.target = parse_mqtt_url(mqtt_url)
        self.client = FastClient(client_id, tuned=tuned)
        self.window = window
        self.keepalive_s = keepalive_s
        self.stats = LinkStats()
        # 0 is "no limit" in paho; the window above is the limit, enforced by `publish`,
        # because with a limit paho re-scans its outgoing dict on every PUBACK.
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        if self.target.username:
            self.client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self.client.tls_set()
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)

    @property
    def acked(self) -> int:
        """Messages the broker acknowledged."""
        return self.client.acked

    @property
    def failed(self) -> int:
        """Messages the broker refused with a failure reason code."""
        return self.client.failed

    @property
    def outstanding(self) -> int:
        """QoS 1 messages sent and not yet acknowledged."""
        return self.client.outstanding

    def connect(self, deadline_s: float = 15.0) -> None:
        """Connect and wait for the CONNACK."""
        end = time.monotonic() + deadline_s
        try:
            self.client.connect(self.target.host, self.target.port, keepalive=self.keepalive_s)
        except OSError as err:
            raise LinkError(
                f"cannot reach MQTT broker {self.target.host}:{self.target.port}: {err}"
            ) from err
        while not self.client.is_connected():
            if time.monotonic() > end:
                raise LinkError(
                    f"no CONNACK from {self.target.host}:{self.target.port} in {deadline_s:.0f} s"
                )
            self.pump(0.05)

    def reconnect(self, deadline_s: float, min_s: float = 0.2, max_s: float = 5.0) -> bool:
        """Reconnect with back-off; paho re-sends what was not acknowledged."""
        end = time.monotonic() + deadline_s
        delay = min_s
        while time.monotonic() < end:
            self.stats.reconnects += 1
            with contextlib.suppress(OSError):
                self.client.reconnect()
                connect_end = min(end, time.monotonic() + 5.0)
                while time.monotonic() < connect_end:
                    self.pump(0.05)
                    if self.client.is_connected():
                        return True
            time.sleep(min(delay, max(0.0, end - time.monotonic())))
            delay = min(delay * 2, max_s)
        return False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; waits (pumping) while the unacknowledged window is full."""
        client = self.client
        if qos and client.outstanding >= self.window:
            while client.outstanding >= self.window:
                if not self.pump(0.01):
                    break
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.stats.errors += 1
            return False
        # NO_CONN: paho keeps a QoS 1 message and sends it after the reconnect.
        self.stats.published += 1
        if client.pending_bytes >= FLUSH_BYTES:
            client.flush()
        return True

    def pump(self, timeout: float = 0.0) -> bool:
        """Write, read and keep alive for up to `timeout` seconds; False if disconnected."""
        client = self.client
        sock = client.socket()
        if sock is None:
            if timeout:
                time.sleep(timeout)
            return False
        client.flush()
        wlist = [sock] if client.want_write() else []
        # Bytes already taken off the socket (by the SSL layer) never wake select().
        unread = client.has_unread_input()
        try:
            readable, writable, _ = select.select([sock], wlist, [], 0.0 if unread else timeout)
        except (OSError, ValueError):
            return False
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if readable or unread:
            rc = client.loop_read()
        if writable:
            client.flush()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        client.flush()
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.socket() is not None

    def drain(self, deadline_s: float) -> bool:
        """Pump until every message is acknowledged or the deadline passes."""
        end = time.monotonic() + deadline_s
        while self.outstanding or self.client.want_write():
            if time.monotonic() > end:
                return False
            if not self.pump(0.02) and not self.client.is_connected():
                return False
        return True

    def disconnect(self) -> None:
        """Say goodbye cleanly (the broker then does not publish the will)."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.flush()
            self.pump(0.05)
