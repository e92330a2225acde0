"""The screen on the real stack: MQTT readings → collector → PostgreSQL → API → Chromium."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from cityvitals.cli.localstack import free_port, wait_for_port
from tests.fix_services import (
    CollectorProcess,
    Publisher,
    ServiceProcess,
    service_env,
    wait_until,
)

pytestmark = pytest.mark.browser

TOKEN = "screen-e2e-admin-token"
HUT = "hut-xuhui-e2e-1"
SENSORS = ("park-xuhui-e2e-1", "park-xuhui-e2e-2")


def _http(method: str, url: str, body: object | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback URL we built
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


@pytest.fixture
def api_process(
    database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str]]:
    """`cityvitals api` on a free port, ready; stopped at the end."""
    port = free_port()
    env = service_env(
        database_url,
        mqtt_url,
        topic_prefix,
        api_port=str(port),
        admin_token=TOKEN,
        snapshot_interval_s="0.5",
    )
    proc = ServiceProcess(["api"], env, tmp_path / "api.log")
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.proc is not None
        wait_for_port(port, 30, proc=proc.proc)
        wait_until(lambda: _http("GET", f"{url}/readyz") == 200, 30, "API ready")
        yield proc, url
    finally:
        proc.stop(signal.SIGTERM, 15)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def test_screen_follows_real_readings_and_flags_a_stopped_api(
    browser: Browser,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    collector_factory: Callable[..., CollectorProcess],
    publisher: Publisher,
    api_process: tuple[ServiceProcess, str],
    artifacts: Path,
) -> None:
    api, url = api_process
    collector = collector_factory(database_url, mqtt_url, topic_prefix)
    collector.start_and_wait()

    assert _http("PUT", f"{url}/v1/devices/{HUT}", {"kind": "waste", "district": "xuhui"}) in (
        200,
        201,
    ), api.log()[-2000:]
    for sensor in SENSORS:
        body = {"kind": "parking", "district": "xuhui", "site": "xuhui-lot-e2e"}
        assert _http("PUT", f"{url}/v1/devices/{sensor}", body) in (200, 201)

    def hut(temp_c: float, seq: int) -> tuple[str, bytes]:
        reading = {
            "ts": _now(),
            "bins": [{"category": "wet", "fill_pct": 35.0}],
            "temp_c": temp_c,
            "seq": seq,
        }
        return f"{topic_prefix}/waste/{HUT}/telemetry", json.dumps(reading).encode()

    def parking(sensor: str, occupied: bool, seq: int) -> tuple[str, bytes]:
        reading = {"ts": _now(), "occupied": occupied, "seq": seq}
        return f"{topic_prefix}/parking/{sensor}/telemetry", json.dumps(reading).encode()

    publisher.publish_all([hut(24.0, 1), *(parking(s, False, 1) for s in SENSORS)])

    ctx = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = ctx.new_page()
    try:
        page.goto(f"{url}/?poll=500")
        tile = page.locator('.tile[data-district="xuhui"]')
        free = page.locator('#vitals .ind[data-indicator="parking.free_spaces"] .ind-value')
        expect(free).to_have_text("2", timeout=20000)
        expect(tile).to_have_attribute("data-status", "normal")
        expect(tile.locator(".tile-name")).to_have_text("徐汇")

        # A hut overheats and one space is taken: the tile turns critical and names
        # the cause, and the city's free spaces drop.
        publisher.publish_all([hut(72.0, 2), parking(SENSORS[0], True, 2)])
        expect(tile).to_have_attribute("data-status", "critical", timeout=20000)
        expect(tile.locator(".tile-driver")).to_have_text("火灾风险")
        expect(tile.locator(".tile-figure")).to_have_text("1")
        expect(free).to_have_text("1", timeout=20000)
        expect(page.locator("#banner")).to_be_hidden()
        page.screenshot(path=artifacts / "real-stack.png")

        api.stop(signal.SIGTERM, 15)
        banner = page.locator("#banner")
        expect(banner).to_be_visible(timeout=15000)
        expect(banner).to_have_attribute("data-kind", "lost")
        expect(page.locator("#banner-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
        expect(free).to_have_text("1")
    finally:
        ctx.close()
