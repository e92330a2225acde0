"""`--register api` posts the fleet to the registry import endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from cityvitals.db.schema import REGISTRY_FIELDS
from cityvitals.simulator.fleet import build_fleet
from cityvitals.simulator.register import API_CHUNK, RegisterError, register_api

TOKEN = "test-token"


class _Registry(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str | None, str | None, list[dict[str, Any]]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(
            (self.path, self.headers["Authorization"], self.headers["Content-Type"], body)
        )
        ok = self.headers["Authorization"] == f"Bearer {TOKEN}"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Registry", (_Registry,), {"received": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fleet_is_imported_in_chunks_with_the_admin_token(
    registry: tuple[str, type[_Registry]],
) -> None:
    url, handler = registry
    fleet = build_fleet(0, 20)
    assert len(fleet) > API_CHUNK
    assert register_api(fleet.devices, api_url=url, token=TOKEN) == len(fleet)
    assert all(path == "/v1/devices/import" for path, *_ in handler.received)
    assert {auth for _, auth, _, _ in handler.received} == {f"Bearer {TOKEN}"}
    assert {ctype for _, _, ctype, _ in handler.received} == {"application/json"}
    sent = [d for *_, body in handler.received for d in body]
    assert [d["device_id"] for d in sent] == fleet.ids()
    meter = next(d for d in sent if d["kind"] == "energy")
    assert set(meter) >= set(REGISTRY_FIELDS)


def test_a_refusal_is_an_error_naming_the_status(registry: tuple[str, type[_Registry]]) -> None:
    url, _ = registry
    with pytest.raises(RegisterError, match="403"):
        register_api(build_fleet(0, 0.2).devices, api_url=url, token="wrong")
