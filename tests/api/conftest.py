"""Fixtures for the API: a migrated database, a fixed clock, an app without background tasks."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from cityvitals.api.engine import Engine
from cityvitals.api.main import create_app
from cityvitals.settings import ApiSettings

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# 2026-11-24 10:00 in Shanghai: a Tuesday morning.
NOW = datetime(2026, 11, 24, 2, 0, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def settings(database_url: str) -> ApiSettings:
    return ApiSettings(database_url=database_url, admin_token=TOKEN, _env_file=None)


@dataclass
class Api:
    """A TestClient whose snapshot refreshes only when the test says so."""

    client: TestClient
    engine: Engine
    clock: Clock
    extra: dict[str, Any] = field(default_factory=dict)

    def refresh(self, *, slow: bool = True) -> None:
        ok = self.client.portal.call(functools.partial(self.engine.refresh, slow=slow))  # type: ignore[union-attr]
        assert ok, "refresh failed"

    def vitals(self) -> dict[str, Any]:
        self.refresh()
        r = self.client.get("/v1/vitals")
        assert r.status_code == 200
        return r.json()  # type: ignore[no-any-return]

    def figure(self, scope: str, indicator: str) -> dict[str, Any]:
        doc = self.vitals()
        return pick(doc, scope, indicator)


def pick(doc: dict[str, Any], scope: str, indicator: str) -> dict[str, Any]:
    """One indicator of the city (`city`) or of a district from a vitals document."""
    if scope == "city":
        items = doc["indicators"]
    else:
        items = next(d for d in doc["districts"] if d["id"] == scope)["indicators"]
    return next(i for i in items if i["id"] == indicator)


@pytest.fixture
def api(settings: ApiSettings, clock: Clock) -> Iterator[Api]:
    app = create_app(settings, clock=clock, background=False)
    with TestClient(app) as client:
        yield Api(client, app.state.engine, clock)


# -- writing state rows straight into the tables the collector maintains -------------


def device(
    db: psycopg.Connection,
    device_id: str,
    kind: str,
    *,
    district: str | None = None,
    site: str | None = None,
    auto: bool = False,
    interval: int | None = None,
    key_consumer: bool = False,
    contract_kw: float | None = None,
) -> None:
    db.execute(
        "INSERT INTO devices (device_id, kind, district, site, auto_registered, "
        "report_interval_s, key_consumer, contract_kw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (device_id, kind, district, site, auto, interval, key_consumer, contract_kw),
    )


def seen(
    db: psycopg.Connection,
    device_id: str,
    kind: str,
    at: datetime,
    *,
    status_online: bool | None = None,
    status_at: datetime | None = None,
) -> None:
    db.execute(
        "INSERT INTO device_state (device_id, kind, last_seen_at, status_online, status_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
        "last_seen_at = excluded.last_seen_at, status_online = excluded.status_online, "
        "status_at = excluded.status_at",
        (device_id, kind, at, status_online, status_at),
    )


def parking(
    db: psycopg.Connection, device_id: str, ts: datetime, *, occupied: bool, battery_v: float = 3.6
) -> None:
    seen(db, device_id, "parking", ts)
    db.execute(
        "INSERT INTO latest_parking (device_id, ts, received_at, occupied, battery_v) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET ts = excluded.ts, "
        "occupied = excluded.occupied, battery_v = excluded.battery_v",
        (device_id, ts, ts, occupied, battery_v),
    )


def waste(
    db: psycopg.Connection,
    device_id: str,
    ts: datetime,
    fills: list[float],
    *,
    h2s: float | None = None,
    nh3: float | None = None,
    ch4: float | None = None,
    temp_c: float | None = None,
    seepage: bool | None = None,
) -> None:
    seen(db, device_id, "waste", ts)
    bins = [{"category": "wet", "fill_pct": f, "weight_kg": None} for f in fills]
    db.execute(
        "INSERT INTO latest_waste (device_id, ts, received_at, bins, fill_max, fill_mean, "
        "h2s_ppm, nh3_ppm, ch4_pct_lel, temp_c, seepage) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (device_id) DO UPDATE SET ts = excluded.ts, bins = excluded.bins, "
        "fill_max = excluded.fill_max, fill_mean = excluded.fill_mean, "
        "h2s_ppm = excluded.h2s_ppm, nh3_ppm = excluded.nh3_ppm, "
        "ch4_pct_lel = excluded.ch4_pct_lel, temp_c = excluded.temp_c, seepage = excluded.seepage",
        (
            device_id,
            ts,
            ts,
            Jsonb(bins),
            max(fills),
            sum(fills) / len(fills),
            h2s,
            nh3,
            ch4,
            temp_c,
            seepage,
        ),
    )


def energy(
    db: psycopg.Connection,
    device_id: str,
    ts: datetime,
    *,
    kw: float,
    kwh: float | None = None,
    voltage: float | None = None,
    pf: float | None = None,
    adjustable: float | None = None,
) -> None:
    seen(db, device_id, "energy", ts)
    db.execute(
        "INSERT INTO latest_energy (device_id, ts, received_at, active_power_kw, energy_kwh, "
        "voltage_v, power_factor, adjustable_kw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (device_id) DO UPDATE SET ts = excluded.ts, "
        "active_power_kw = excluded.active_power_kw, energy_kwh = excluded.energy_kwh, "
        "voltage_v = excluded.voltage_v, power_factor = excluded.power_factor, "
        "adjustable_kw = excluded.adjustable_kw",
        (device_id, ts, ts, kw, kwh, voltage, pf, adjustable),
    )
