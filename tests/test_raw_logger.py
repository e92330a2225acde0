"""The benchmarks' raw logger baseline (scripts/raw_logger.py) against the real servers.

The write benchmarks compare the collector with it, so it must store what it is sent,
topic and text as they came, including what it missed while away (its session is
persistent, as the drain benchmark needs).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fix_servers import PgAdmin
from tests.fix_services import Publisher, service_env, wait_until

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "raw_logger.py"


@pytest.fixture
def empty_db(pg_admin: PgAdmin) -> Iterator[str]:
    """An empty database: the logger makes its own table."""
    name = f"t_raw_{uuid.uuid4().hex[:10]}"
    url = pg_admin.create(name)
    try:
        yield url
    finally:
        pg_admin.drop(name)


def _rows(db: str) -> list[tuple[str, str]]:
    with psycopg.connect(db) as conn:
        if conn.execute("SELECT to_regclass('raw_log')").fetchone() == (None,):
            return []
        return [
            (str(t), str(p))
            for t, p in conn.execute("SELECT topic, payload FROM raw_log ORDER BY received_at")
        ]


def test_stores_topic_and_text_and_what_came_while_away(
    empty_db: str, mqtt_url: str, topic_prefix: str, publisher: Publisher, tmp_path: Path
) -> None:
    env = service_env(empty_db, mqtt_url, topic_prefix, client_id=f"raw-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "raw.log"

    def start() -> subprocess.Popen[bytes]:
        seen = log.read_text().count("subscribed") if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: log.exists() and log.read_text().count("subscribed") > seen,
            30,
            "raw logger subscribed",
        )
        return proc

    def stop(proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)

    topic = f"{topic_prefix}/energy/em-1/telemetry"
    proc = start()
    # Not validated: a payload no reading parses from is stored as it came.
    publisher.publish_all([(topic, b'{"active_power_kw": 1}'), (f"{topic_prefix}/x", b"\xffhi")])
    wait_until(lambda: len(_rows(empty_db)) == 2, 30, "two rows")
    assert stop(proc) == 0
    publisher.publish_all([(topic, b'{"seq": %d}' % i) for i in range(100)])
    proc = start()
    wait_until(lambda: len(_rows(empty_db)) == 102, 30, "the backlog stored")
    assert stop(proc) == 0
    rows = _rows(empty_db)
    assert rows[0] == (topic, '{"active_power_kw": 1}')
    assert rows[1] == (f"{topic_prefix}/x", "\ufffdhi")
    assert sorted(p for _, p in rows[2:]) == sorted(f'{{"seq": {i}}}' for i in range(100))
