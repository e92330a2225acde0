"""Test harness: a real PostgreSQL and a real Mosquitto for the whole session.

Both are started on free loopback ports from the system's binaries and torn down at
the end, even when tests fail. `CITYVITALS_TEST_DATABASE_URL` and
`CITYVITALS_TEST_MQTT_URL` point the suite at existing servers instead (for example a
TimescaleDB). Each test gets its own database, cloned from a migrated template, and
its own topic prefix.
"""

from __future__ import annotations

pytest_plugins = ["tests.fix_servers", "tests.fix_services"]
