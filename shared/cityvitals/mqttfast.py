"""paho-mqtt 2 with a bulk receive path and batched PUBACKs, on the pinned paho only.

paho's stock reader takes one packet per `select()` wake-up and reads it with three
`recv()` calls (1 byte, the length bytes, the body); each `ack()` queues its own
packet, writes a wake-up byte and is sent with its own `send()`. Measured on the
project's 2-core machine, that caps a subscriber at about 11,000 QoS 1 msg/s on a
whole core before it stores anything (docs/ingestion.md, "Why paho is tuned"), and
the reader is one of the hot spots that hold a stock publisher at about 12,000
msg/s (docs/simulator.md). `TunedClient`
keeps paho for the whole protocol (CONNECT, session, keepalive, SUBSCRIBE, packet
parsing, DISCONNECT) and changes only:

- `_sock_recv`: one `recv()` takes whatever the socket holds (up to `RECV_CHUNK`)
  and paho's small reads are served from that buffer;
- `loop_read`: every complete packet already received is handled per wake-up, not
  one;
- `ack_many`: the PUBACKs of a batch (MQTT 5 §3.4; the reason code is left out,
  which means success, §3.4.2.1) leave as one queued write;
- `on_publish_raw` (optional, with `manual_ack=True`): the QoS 0 and 1 PUBLISH
  packets (MQTT 5 §3.3) that lie whole in the buffer are cut out of it in one loop
  and handed over as (topic, payload, packet id, QoS) bytes, without paho's
  `MQTTMessage`, its properties object, its debug formatting and its callback
  matching. That is most of what a stock subscriber spends per message. Any packet
  the loop does not take whole (another type, QoS 2, properties, a `$` topic, a
  packet larger than `RECV_CHUNK`, a malformed length) is left where it is for
  paho's own reader, and the loop goes on after it. Callbacks added with
  `message_callback_add` are not consulted for what it takes: use it where `on_message`
  is the one handler for non-`$` topics (the collector's only other one is for `$SYS`);
- `pause_reading` (optional): while it says True, no PUBLISH is read or handed
  over (packets of other kinds still are, a PINGRESP above all). Debian's Mosquitto
  2.0.11 sends a resumed session's whole queue without waiting for PUBACKs (past the
  client's Receive Maximum, MQTT 5 §3.3.4); pausing lets TCP hold it back, so that
  what a subscriber holds stays bounded.

All of these rest on private parts of paho-mqtt (`PAHO_METHODS`, `PAHO_STATE`), so they
are used only when paho is the version the lock file pins (`PINNED_PAHO`) and every
private name they touch is there (`private_api_problem`). Otherwise the client is
stock paho, its own reader and one public `ack()` per message, and logs one warning
saying why. `tuned=False` asks for stock paho on purpose, to measure one against the
other.

Over TLS a socket is an `ssl.SSLSocket`: one `recv()` returns at most one TLS record
(16 KiB); a record that arrived in part raises `SSLWantReadError` although
`select()` said readable (paho's `_sock_recv` turns that into `BlockingIOError`, and
the packet read so far waits in paho's state for the next wake-up); and decrypted
bytes can sit in the SSL layer where `select()` cannot see them (`pending()`).
`loop_read` keeps reading while our buffer or the SSL layer holds bytes, so no
packet waits for a wake-up that never comes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import paho.mqtt
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode

# The paho-mqtt release the overrides were written against and tested with (uv.lock).
PINNED_PAHO = "2.2.0"
# How many bytes one `recv()` may take: a few milliseconds of traffic at full rate.
RECV_CHUNK = 256 * 1024
# MQTT 5 §3.4.1: PUBACK's fixed header byte; remaining length 2 is the packet id alone.
_PUBACK = 0x40
_PUBACK_FMT = struct.Struct("!BBH")
# MQTT 5 §3.3.1: a PUBLISH's fixed header is 0x3_ (DUP, QoS and RETAIN in the low bits).
_PUBLISH = 0x30
_DOLLAR = 0x24

# How long a paused reader sleeps between looks, and at most in one call of
# `loop_read`, so that paho's loop still sends acknowledgements and pings meanwhile.
PAUSE_POLL_S = 0.005
PAUSE_MAX_S = 0.5
# (topic, payload, packet id (0 for QoS 0), QoS) of a PUBLISH taken from the buffer.
RawPublish = Callable[[bytes, bytes, int, int], None]

# paho methods the overrides call or replace.
PAHO_METHODS: tuple[str, ...] = (
    "_sock_recv",
    "_sock_close",
    "_packet_read",
    "_packet_queue",
    "_loop_rc_handle",
)
# paho state they read, set by paho's constructor.
PAHO_STATE: tuple[str, ...] = (
    "_sock",
    "_in_packet",
    "_manual_ack",
    "_protocol",
    "_msgtime_mutex",
    "_last_bytes_received",
)


def private_api_problem(
    client: mqtt.Client,
    *,
    methods: Iterable[str] = (),
    state: Iterable[str] = (),
) -> str | None:
    """Why private overrides must not be used on this paho, or None when they may."""
    version = getattr(paho.mqtt, "__version__", "unknown")
    if version != PINNED_PAHO:
        return f"paho-mqtt {version} is not the pinned {PINNED_PAHO}"
    # Methods are looked up on paho's class: a subclass defines its own overrides.
    missing = [name for name in (*PAHO_METHODS, *methods) if not hasattr(mqtt.Client, name)]
    missing += [name for name in (*PAHO_STATE, *state) if not hasattr(client, name)]
    if missing:
        return f"paho-mqtt {version} lacks {', '.join(missing)}"
    return None


class TunedClient(mqtt.Client):
    """A paho client that reads in bulk and acknowledges a batch in one write."""

    # Further private names a subclass relies on; the same guard checks them.
    EXTRA_METHODS: ClassVar[tuple[str, ...]] = ()
    EXTRA_STATE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, tuned: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        # Set it to take PUBLISH packets straight from the buffer (module docstring).
        self.on_publish_raw: RawPublish | None = None
        # While it says True, no PUBLISH is read: the socket fills and TCP holds the
        # broker back (`PAUSE_POLL_S`).
        self.pause_reading: Callable[[], bool] | None = None
        problem = (
            private_api_problem(self, methods=self.EXTRA_METHODS, state=self.EXTRA_STATE)
            if tuned
            else None
        )
        self._tuned = tuned and problem is None
        if not tuned:
            structlog.get_logger(__name__).info(
                "mqtt_client_stock", reason="tuned=False", client=type(self).__name__
            )
        elif problem is not None:
            # Looked up here: structlog caches a logger on first use, past later config.
            structlog.get_logger(__name__).warning(
                "mqtt_client_untuned",
                reason=problem,
                fallback="stock paho reader, one ack() per message",
                client=type(self).__name__,
            )

    @property
    def tuned(self) -> bool:
        """Whether the private overrides are in use (False: stock paho)."""
        return self._tuned

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._tuned:
            return super()._sock_recv(bufsize)
        if self._rpos >= len(self._rbuf):
            # paho's own recv keeps its TLS and error handling.
            data = super()._sock_recv(RECV_CHUNK)
            if not data:
                return data  # the broker closed the connection
            self._rbuf = data
            self._rpos = 0
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos += len(chunk)
        return chunk

    def has_unread_input(self) -> bool:
        """Received bytes a `select()` on the socket cannot report: ours or the TLS layer's."""
        if self._rpos < len(self._rbuf):
            return True
        sock = self.socket()
        pending = getattr(sock, "pending", None)
        return pending is not None and pending() > 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every packet received so far, not only the first."""
        if not self._tuned:
            return super().loop_read(max_packets)
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            paused = self._paused()
            if paused and not self._control_packet_next():
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if (
                not paused
                and self.on_publish_raw is not None
                and self._manual_ack
                and self._in_packet["command"] == 0
                and self._take_publishes(self.on_publish_raw)
            ):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            # MQTT_ERR_AGAIN is the socket running dry, or paho pausing inside a large
            # packet: in the second case bytes may still be waiting where select() is blind.
            if not self.has_unread_input():
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _paused(self) -> bool:
        """Wait (up to `PAUSE_MAX_S`) while `pause_reading` says so; whether it still does."""
        pause = self.pause_reading
        if pause is None or not pause():
            return False
        deadline = time.monotonic() + PAUSE_MAX_S
        while time.monotonic() < deadline:
            time.sleep(PAUSE_POLL_S)
            if not pause():
                return False
        return True

    def _control_packet_next(self) -> bool:
        """While paused: whether paho's reader may take the next packet anyway, because it
        is not a PUBLISH (a PINGRESP must still be read, or paho drops the connection
        for a missed keep-alive) or is one it has begun. Reads at most one chunk."""
        if self._in_packet["command"] != 0:
            return True  # a packet paho has begun: it finishes it
        if self._rpos >= len(self._rbuf):
            data = self._read_chunk()
            if data is None:
                return False
            if not data:
                return True  # paho's reader meets the error or the close and handles it
            self._rbuf, self._rpos = data, 0
        return self._rbuf[self._rpos] & 0xF0 != _PUBLISH

    def _read_chunk(self) -> bytes | None:
        """One `recv()` of up to `RECV_CHUNK` through paho's own (TLS, errors): the bytes,
        None when the socket has nothing now, or b"" on an error or a closed connection,
        which paho's reader then meets again and handles."""
        try:
            data = super()._sock_recv(RECV_CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        if data:
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        return data

    def _take_publishes(self, deliver: RawPublish) -> bool:
        """Hand over every whole QoS 0/1 PUBLISH at the head of the buffer, reading more
        while the socket has it; stop at the first packet left to paho's reader (it stays
        in the buffer). Returns whether the socket ran dry (nothing more to read now)."""
        buf, pos = self._rbuf, self._rpos
        v5 = self._protocol == mqtt.MQTTv5
        try:
            while True:
                end = len(buf)
                # The fixed header: type byte, then 1-4 length bytes (§2.1.4).
                if pos < end:
                    head = buf[pos]
                    if head & 0xF0 != _PUBLISH or head & 0x06 > 0x02:
                        return False  # not a PUBLISH, or QoS 2: paho's
                    length, shift, p = 0, 0, pos + 1
                    while p < end and p - pos <= 4:
                        byte = buf[p]
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        p += 1
                        if not byte & 0x80:
                            break
                    else:
                        if p - pos > 4:
                            return False  # malformed length: paho's reader refuses it
                        p = -1  # the length is cut off
                    if p > 0 and p + length <= end:
                        stop = p + length
                        qos = (head >> 1) & 0x03
                        if length < 2:
                            return False  # malformed: paho's reader refuses it
                        t = p + 2
                        end_topic = t + ((buf[p] << 8) | buf[p + 1])
                        q = end_topic + (2 if qos else 0)
                        if (
                            q > stop
                            or end_topic == t
                            or buf[t] == _DOLLAR
                            or (v5 and (q >= stop or buf[q] != 0))
                        ):
                            return False  # properties, a `$` topic, odd: paho's
                        mid = (buf[q - 2] << 8) | buf[q - 1] if qos else 0
                        pos = stop
                        deliver(buf[t:end_topic], buf[q + 1 if v5 else q : stop], mid, qos)
                        if self.pause_reading is not None and self.pause_reading():
                            return True  # the rest waits in the buffer
                        continue
                    if p > 0 and p + length - pos > RECV_CHUNK:
                        return False  # a large packet: paho's reader takes it piecewise
                # The buffer is empty or ends in part of a packet: read more.
                data = self._read_chunk()
                if data is None:
                    return True
                if not data:
                    return False  # an error or a close: paho's reader handles it
                buf = buf[pos:] + data if pos < end else data
                pos = 0
        finally:
            self._rbuf, self._rpos = buf, pos

    def _sock_close(self) -> None:
        # A new connection must not read bytes left over from the old one.
        self._rbuf = b""
        self._rpos = 0
        super()._sock_close()

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """Acknowledge QoS 1 messages by packet id: one queued write (stock: one each)."""
        if not self._tuned:
            first_error = MQTTErrorCode.MQTT_ERR_SUCCESS
            for mid in mids:
                rc = self.ack(mid, 1)
                if rc and not first_error:
                    first_error = rc
            return first_error
        if not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS  # paho acknowledged them on arrival
        # Mosquitto 2.0 handles one packet per connection per turn of its loop: a large
        # batch takes effect over many turns; a session taken over meanwhile gets the
        # rest re-delivered (at least once still holds).
        buf = b"".join(_PUBACK_FMT.pack(_PUBACK, 2, mid) for mid in mids)
        if not buf:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._packet_queue(_PUBACK, buf, 0, 0)
