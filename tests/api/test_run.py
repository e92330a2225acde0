"""`cityvitals api` as a process: serves, exits 0 on SIGTERM, says when the port is taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from cityvitals.api.main import run
from cityvitals.cli.localstack import free_port
from cityvitals.settings import ApiSettings
from cityvitals.startup import StartupError
from tests.fix_services import wait_until


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_api_process_serves_and_exits_zero_on_sigterm(database_url: str) -> None:
    port = free_port()
    env = os.environ | {
        "CITYVITALS_DATABASE_URL": database_url,
        "CITYVITALS_API_PORT": str(port),
        "CITYVITALS_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cityvitals.cli.main import app; app(['api'])"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}/readyz"), 30, "API ready")
        vitals = httpx.get(f"http://127.0.0.1:{port}/v1/vitals", timeout=5)
        assert vitals.status_code == 200
        assert vitals.json()["stale"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_refuses_a_taken_port_with_a_clear_message(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError) as err:
            run(ApiSettings(database_url=database_url, api_port=port))
    assert "CITYVITALS_API_PORT" in err.value.fix
