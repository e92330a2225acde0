"""Registering the fleet: `--register api` posts it to the import endpoint, `--register db`
imports it through the registry library."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import psycopg
import pytest

from cityvitals.db.schema import REGISTRY_FIELDS
from cityvitals.simulator.fleet import build_fleet
from cityvitals.simulator.register import API_CHUNK, RegisterError, register_api, register_db

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


def test_register_db_goes_through_the_registry_and_refuses_a_kind_change(
    database_url: str,
) -> None:
    fleet = build_fleet(0, 0.2)
    hut = fleet.of_kind("waste")[0]
    meter = fleet.of_kind("energy")[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind) VALUES (%s, 'parking')", (meter.device_id,)
        )
    with pytest.raises(RegisterError, match=f"refused 1 of {len(fleet)}") as refused:
        register_db(fleet.devices, dsn=database_url)
    assert "registered with another kind" in str(refused.value)
    with psycopg.connect(database_url) as conn:
        kinds: dict[str, str] = dict(conn.execute("SELECT device_id, kind FROM devices").fetchall())
        hours = conn.execute(
            "SELECT opening_hours FROM devices WHERE device_id = %s", (hut.device_id,)
        ).fetchone()
    assert kinds[meter.device_id] == "parking"
    assert len(kinds) == len(fleet)
    # Stored as the API stores them, not as the simulator's pairs.
    assert hours == ([{"open": "07:00", "close": "09:00"}, {"open": "18:00", "close": "20:00"}],)
