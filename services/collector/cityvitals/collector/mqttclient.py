"""The collector's MQTT client: paho with bulk reads and one write per batch of PUBACKs.

A batch is acknowledged only once it is committed, so its PUBACKs leave together;
`ack_many` sends them as one write where stock paho sends one packet per message.
The receive path and the acknowledgements, why they are tuned (measured: stock paho
caps a subscriber at about 11,000 QoS 1 msg/s) and how the tuning falls back to
stock paho on any other paho release are in `cityvitals.mqttfast`.
"""

from __future__ import annotations

from cityvitals.mqttfast import TunedClient


class CollectorClient(TunedClient):
    """The collector's paho client; `tuned=False` makes it stock paho (for benchmarks)."""
