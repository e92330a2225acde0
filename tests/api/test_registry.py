"""The registry: auth on every write, PUT/GET/DELETE, paging, import with a row report."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from cityvitals.api.main import create_app
from cityvitals.settings import ApiSettings
from scripts.make_registry_csv import write
from tests.api.conftest import AUTH, NOW, Api, device, parking

WRITES = [
    ("PUT", "/v1/devices/p-1", {"json": {"kind": "parking"}}),
    ("DELETE", "/v1/devices/p-1", {}),
    (
        "POST",
        "/v1/devices/import",
        {"content": b"device_id,kind\nx,parking\n", "headers": {"Content-Type": "text/csv"}},
    ),
    ("POST", "/v1/dead-letters/replay", {}),
]


@pytest.mark.parametrize(("method", "path", "kw"), WRITES)
def test_every_write_needs_the_admin_token(
    api: Api, method: str, path: str, kw: dict[str, Any]
) -> None:
    headers = dict(kw.get("headers", {}))
    rest = {k: v for k, v in kw.items() if k != "headers"}
    r = api.client.request(method, path, headers=headers, **rest)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = api.client.request(method, path, headers=headers | {"Authorization": "Bearer nope"}, **rest)
    assert r.status_code == 403
    r = api.client.request(method, path, headers=headers | {"Authorization": "Basic eDp5"}, **rest)
    assert r.status_code == 401


def test_malformed_body_without_token_is_401_not_422(api: Api) -> None:
    r = api.client.put(
        "/v1/devices/p-1", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401


def test_writes_are_403_when_no_admin_token_is_configured(api: Api) -> None:
    api.client.app.state.settings = api.client.app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={"admin_token": None}
    )
    r = api.client.put("/v1/devices/p-1", json={"kind": "parking"}, headers=AUTH)
    assert r.status_code == 403


def test_put_get_delete_device(api: Api, db: psycopg.Connection) -> None:
    body = {
        "kind": "energy",
        "district": "pudong",
        "site": "Tower 1",
        "key_consumer": True,
        "contract_kw": 800,
    }
    r = api.client.put("/v1/devices/em-1", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["online"] is False
    assert r.json()["last_seen"] is None
    r = api.client.put("/v1/devices/em-1", json=body | {"contract_kw": 900}, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["contract_kw"] == 900
    r = api.client.put("/v1/devices/em-1", json={"kind": "parking"}, headers=AUTH)
    assert r.status_code == 409
    r = api.client.put(
        "/v1/devices/em-2", json={"kind": "energy", "district": "atlantis"}, headers=AUTH
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "district"]
    r = api.client.put("/v1/devices/bad id!", json={"kind": "energy"}, headers=AUTH)
    assert r.status_code == 422
    r = api.client.put("/v1/devices/w-1", json={"kind": "waste"}, headers=AUTH)
    assert r.json()["opening_hours"] == [
        {"open": "07:00", "close": "09:00"},
        {"open": "18:00", "close": "20:00"},
    ]
    parking(db, "em-1", NOW - timedelta(seconds=5), occupied=False)  # any message counts
    got = api.client.get("/v1/devices/em-1").json()
    assert got["online"] is True
    assert got["last_seen"] is not None
    assert api.client.get("/v1/devices/nope").status_code == 404
    assert api.client.delete("/v1/devices/em-1", headers=AUTH).status_code == 204
    assert api.client.get("/v1/devices/em-1").status_code == 404
    assert api.client.delete("/v1/devices/em-1", headers=AUTH).status_code == 404


def test_put_registers_an_auto_registered_device(api: Api, db: psycopg.Connection) -> None:
    device(db, "u-1", "parking", auto=True)
    r = api.client.put(
        "/v1/devices/u-1", json={"kind": "parking", "district": "xuhui"}, headers=AUTH
    )
    assert r.status_code == 200
    assert r.json()["auto_registered"] is False
    assert r.json()["district"] == "xuhui"


def test_list_pages_by_cursor_and_filters(api: Api, db: psycopg.Connection) -> None:
    for i in range(7):
        device(db, f"p{i}", "parking", district="xuhui" if i % 2 else None)
    parking(db, "p3", NOW - timedelta(seconds=5), occupied=True)
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/v1/devices", params=params).json()
        ids += [d["device_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [f"p{i}" for i in range(7)]
    online = api.client.get("/v1/devices", params={"online": "true"}).json()["items"]
    assert [d["device_id"] for d in online] == ["p3"]
    xuhui = api.client.get("/v1/devices", params={"district": "xuhui"}).json()["items"]
    assert [d["device_id"] for d in xuhui] == ["p1", "p3", "p5"]
    un = api.client.get("/v1/devices", params={"district": "unassigned"}).json()["items"]
    assert len(un) == 4
    for params in ({"kind": "bus"}, {"limit": 0}, {"cursor": "x" * 201}, {"district": "x"}):
        r = api.client.get("/v1/devices", params=params)
        assert r.status_code == 422, params
        assert r.json()["detail"][0]["loc"][-1] == next(iter(params))


def test_csv_import_reports_bad_rows_and_stores_good_ones(api: Api) -> None:
    csv = (
        "device_id,kind,district,site,opening_hours,key_consumer,contract_kw\n"
        "hut-1,waste,xuhui,Compound A,07:00-09:00;18:30-20:30,,\n"
        "em-1,energy,pudong,Tower,,true,800\n"
        "bad-1,waste,atlantis,,,,\n"
        "bad-2,parking,xuhui,,,,-5\n"
        "hut-1,waste,xuhui,,,,\n"
    )
    r = api.client.post(
        "/v1/devices/import", content=csv.encode(), headers=AUTH | {"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == 2
    assert [(f["row"], f["device_id"]) for f in report["failed"]] == [
        (3, "bad-1"),
        (4, "bad-2"),
        (5, "hut-1"),
    ]
    assert "district" in report["failed"][0]["errors"][0]
    hut = api.client.get("/v1/devices/hut-1").json()
    assert hut["opening_hours"][1] == {"open": "18:30", "close": "20:30"}
    assert api.client.get("/v1/devices/em-1").json()["key_consumer"] is True


def test_json_import_and_unsupported_content(api: Api) -> None:
    body = [
        {"device_id": "p-9", "kind": "parking", "district": "songjiang", "site": "Lot 9"},
        {"device_id": "p-10", "kind": "tram"},
    ]
    r = api.client.post("/v1/devices/import", json=body, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["imported"] == 1
    assert r.json()["failed"][0]["row"] == 2
    r = api.client.post(
        "/v1/devices/import", content=b"x", headers=AUTH | {"Content-Type": "application/xml"}
    )
    assert r.status_code == 415
    r = api.client.post(
        "/v1/devices/import", content=b"[{", headers=AUTH | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422


def test_bodies_over_the_limit_are_413(settings: ApiSettings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 2048}), background=False)
    big = b"device_id,kind\n" + b"x,parking\n" * 300
    with TestClient(app) as client:
        r = client.post(
            "/v1/devices/import", content=big, headers=AUTH | {"Content-Type": "text/csv"}
        )
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:
            yield big  # no Content-Length: counted while streaming

        r = client.post(
            "/v1/devices/import", content=chunks(), headers=AUTH | {"Content-Type": "text/csv"}
        )
        assert r.status_code == 413


def test_import_streams_a_body_sent_in_pieces_and_reports_bad_rows(
    api: Api, db: psycopg.Connection
) -> None:
    out = io.StringIO()
    written = write(out, 20_000, bad_rate=0.01, seed=5)
    data = out.getvalue().encode()

    def pieces() -> Iterator[bytes]:
        # No Content-Length: the body arrives as it is sent, in odd-sized pieces.
        for start in range(0, len(data), 4099):
            yield data[start : start + 4099]

    r = api.client.post(
        "/v1/devices/import", content=pieces(), headers=AUTH | {"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == written.good
    assert len(report["failed"]) == sum(written.bad.values())
    assert db.execute("SELECT count(*) FROM devices").fetchone() == (written.good,)


def test_import_refuses_to_change_a_registered_kind(api: Api, db: psycopg.Connection) -> None:
    device(db, "em-1", "energy", district="pudong")
    csv = "device_id,kind,district\nem-1,parking,xuhui\np-1,parking,xuhui\n"
    r = api.client.post(
        "/v1/devices/import", content=csv.encode(), headers=AUTH | {"Content-Type": "text/csv"}
    )
    assert r.json() == {
        "imported": 1,
        "failed": [
            {
                "row": 1,
                "device_id": "em-1",
                "errors": ["kind: the device is registered with another kind"],
            }
        ],
    }
    got = api.client.get("/v1/devices/em-1").json()
    assert (got["kind"], got["district"]) == ("energy", "pudong")
