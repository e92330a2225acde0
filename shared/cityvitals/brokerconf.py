"""Broker limits the project ships (deploy/mosquitto/mosquitto.conf holds the same lines).

Sized for docs/wire.md (delivery guarantee) and docs/targets.md: a collector that is
slow or away for 60 s at 20,000 msg/s leaves 1.2 million QoS 1 messages queued in its
persistent session, and the stock limit (1,000 queued messages) would drop all but the
first thousand.
"""

from __future__ import annotations

# (option, value, why)
QUEUE_SETTINGS: tuple[tuple[str, str, str], ...] = (
    (
        "max_inflight_messages",
        "65535",
        "unacked window per client; MQTT 5 clients lower it with Receive Maximum "
        "(MQTT 5 §3.1.2.11.3), so the collector's window decides",
    ),
    (
        "max_queued_messages",
        "3000000",
        "60 s away at 20,000 msg/s is 1.2 million messages; 2.5x headroom",
    ),
    (
        "max_queued_bytes",
        "0",
        "no byte cap: the message count above is the bound (about 0.5 GB of readings)",
    ),
    ("queue_qos0_messages", "false", "QoS 0 is best effort by contract (docs/wire.md)"),
    (
        "persistent_client_expiration",
        "7d",
        "forget a collector's session only after a week away, matching the too_old limit",
    ),
    (
        "set_tcp_nodelay",
        "true",
        "acks and small readings go out at once instead of waiting for Nagle",
    ),
    (
        "max_packet_size",
        "1048576",
        "oversized payloads still reach the collector to be dead-lettered as too_large",
    ),
)


def queue_settings() -> list[str]:
    """The settings as mosquitto.conf lines."""
    return [f"{name} {value}" for name, value, _ in QUEUE_SETTINGS]
