"""The API and a collector as real processes, for the tests that scrape them."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cityvitals.cli.localstack import free_port

SERVICE_MODULES = {"collector": "cityvitals.collector.main", "api": "cityvitals.api.main"}
START_DEADLINE_S = 60.0


@dataclass
class RunningServices:
    """`cityvitals api` and `cityvitals collector` listening on loopback ports."""

    api_port: int
    metrics_port: int
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Each service's /metrics URL."""
        return {
            "collector": f"http://127.0.0.1:{self.metrics_port}/metrics",
            "api": f"http://127.0.0.1:{self.api_port}/metrics",
        }

    def metric_families(self) -> dict[str, str]:
        """Metric names and types from a real read of every service's /metrics."""
        families: dict[str, str] = {}
        for url in self.metrics_urls.values():
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
                text = resp.read().decode()
            for line in text.splitlines():
                if m := re.match(r"# TYPE (\S+) (\S+)", line):
                    families[m.group(1)] = m.group(2)
                elif line and not line.startswith("#"):
                    families.setdefault(re.split(r"[{ ]", line, maxsplit=1)[0], "untyped")
        return families

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of a service's log, for failure messages."""
        text = self.logs[name].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def require_services() -> None:
    """Fail (not skip) with a clear message while a service module does not exist yet."""
    missing = [m for m in SERVICE_MODULES.values() if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not importable: the services these deploy tests scrape "
            "are not there yet (collector and API issues)"
        )


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _wait_http(services: RunningServices, name: str, url: str) -> None:
    end = time.monotonic() + START_DEADLINE_S
    proc = services.procs[name]
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(
                f"`cityvitals {name}` exited ({proc.returncode}):\n{services.log_tail(name)}"
            )
        if _get(url) == 200:
            return
        time.sleep(0.1)
    pytest.fail(f"`cityvitals {name}` did not answer {url} in time:\n{services.log_tail(name)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def running_services(
    database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> Iterator[RunningServices]:
    """The real API and collector, configured only through CITYVITALS_* variables."""
    require_services()
    services = RunningServices(
        api_port=free_port(),
        metrics_port=free_port(),
        logs={name: tmp_path / f"{name}.log" for name in SERVICE_MODULES},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")}
    env |= {
        "CITYVITALS_DATABASE_URL": database_url,
        "CITYVITALS_MQTT_URL": mqtt_url,
        "CITYVITALS_TOPIC_PREFIX": topic_prefix,
        "CITYVITALS_API_HOST": "127.0.0.1",
        "CITYVITALS_API_PORT": str(services.api_port),
        "CITYVITALS_METRICS_HOST": "127.0.0.1",
        "CITYVITALS_METRICS_PORT": str(services.metrics_port),
        "CITYVITALS_CLIENT_ID": f"deploy-test-{uuid.uuid4().hex[:8]}",
        "CITYVITALS_SHARE_GROUP": f"deploy{uuid.uuid4().hex[:8]}",
        "CITYVITALS_LOG_FORMAT": "json",
    }
    cli = str(Path(sys.executable).with_name("cityvitals"))
    try:
        for name in SERVICE_MODULES:
            with services.logs[name].open("wb") as log:
                # cwd: the scratch folder, so no developer's .env is read.
                services.procs[name] = subprocess.Popen(
                    [cli, name],
                    env=env,
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        _wait_http(services, "api", f"http://127.0.0.1:{services.api_port}/healthz")
        _wait_http(services, "collector", services.metrics_urls["collector"])
        yield services
    finally:
        for proc in services.procs.values():
            _stop(proc)
