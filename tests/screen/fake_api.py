"""A canned City Vitals API for the screen's browser tests.

It serves the screen's static folder and API JSON (docs/api.md) built from the catalogue, with
ETags and 304s like the real API. A test changes the canned data between polls, or
makes the API fail, and watches the page follow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cityvitals import catalogue
from cityvitals.catalogue import Status
from cityvitals.cli.localstack import free_port, wait_for_port

STATIC = Path(__file__).resolve().parents[2] / "services/api/cityvitals/api/static"

Json = dict[str, Any]
CITY_TZ = ZoneInfo("Asia/Shanghai")

# Plausible magnitudes per indicator for one district; the city sums or averages them.
_RANGES: dict[str, tuple[float, float]] = {
    "parking.occupancy_ratio": (0.45, 0.8),
    "parking.free_spaces": (300, 2400),
    "parking.lots_near_full": (0, 3),
    "parking.turnover_24h": (2.0, 5.5),
    "waste.fill_pct_mean": (32, 64),
    "waste.huts_full": (0, 0),
    "waste.gas_alarms": (0, 0),
    "waste.fire_risk": (0, 0),
    "waste.seepage": (0, 0),
    "waste.offhours_dropoffs_today": (0, 12),
    "waste.deposited_kg_today": (2000, 9000),
    "energy.load_kw": (18000, 90000),
    "energy.consumption_kwh_today": (150000, 700000),
    "energy.peak_load_kw_today": (25000, 110000),
    "energy.co2_t_today": (60, 300),
    "energy.adjustable_kw": (1500, 9000),
    "energy.low_power_factor": (0, 0),
    "energy.voltage_deviation": (0, 0),
    "energy.key_consumer_monitoring_rate": (0.97, 1.0),
    "devices.online_ratio": (0.965, 0.995),
    "devices.completeness_1h": (0.992, 0.9995),
    "devices.low_battery": (0, 14),
    "devices.ingest_lag_p95_s": (0.3, 1.2),
    "devices.unassigned": (0, 0),
    "devices.rejected_ratio_10m": (0.0005, 0.003),
}
_COUNTS = {i.id for i in catalogue.CATALOGUE if i.unit == "count"}
_SUMMED = _COUNTS | {
    "parking.free_spaces",
    "waste.deposited_kg_today",
    "energy.load_kw",
    "energy.consumption_kwh_today",
    "energy.peak_load_kw_today",
    "energy.co2_t_today",
    "energy.adjustable_kw",
}
WASTE_SPLIT = {"wet": 0.52, "dry": 0.31, "recyclable": 0.16, "hazardous": 0.01}
KIND_OF_DOMAIN = {"parking": "parking", "waste": "waste", "energy": "energy"}


def status_of(ind_id: str, value: float | None) -> str:
    """The status the catalogue gives a value (entity counters: any counted is a status)."""
    ind = catalogue.BY_ID[ind_id]
    if value is None:
        return "normal"
    if ind.thresholds is not None:
        return ind.thresholds.status(value).label
    if ind.entity_thresholds is not None and value > 0:
        worst = max(
            (s for s in Status if ind.entity_thresholds.bound(s) is not None),
            default=Status.ATTENTION,
        )
        return Status.ATTENTION.label if ind_id == "waste.huts_full" else worst.label
    return "normal"


def indicator(
    ind_id: str,
    value: float | None,
    *,
    coverage: float = 0.99,
    data_age_s: float = 12.0,
    stale: bool | None = None,
    status: str | None = None,
) -> Json:
    """One Indicator object (docs/api.md)."""
    ind = catalogue.BY_ID[ind_id]
    out: Json = {
        "id": ind.id,
        "name": {"zh": ind.name_zh, "en": ind.name_en},
        "value": value,
        "unit": ind.unit,
        "status": status or status_of(ind_id, value),
        "coverage": coverage,
        "data_age_s": data_age_s,
        "stale": stale if stale is not None else coverage < catalogue.STALE_COVERAGE,
    }
    if ind_id == "waste.deposited_kg_today" and value is not None:
        out["by"] = {k: round(value * f, 1) for k, f in WASTE_SPLIT.items()}
    if ind_id == "devices.online_ratio" and value is not None:
        out["by"] = {"parking": round(value, 3), "waste": round(value, 3), "energy": 1.0}
    return out


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: Status[s.upper()].value, default="normal")


@dataclass
class Scenario:
    """Canned data a test edits: district indicator values and the alert list."""

    seed: int = 7
    values: dict[str, dict[str, float | None]] = field(default_factory=dict)
    overrides: dict[tuple[str, str], Json] = field(default_factory=dict)
    city_overrides: dict[str, Json] = field(default_factory=dict)
    alerts: list[Json] = field(default_factory=list)
    db_down: bool = False
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        rnd = random.Random(self.seed)
        for d in catalogue.DISTRICTS:
            row: dict[str, float | None] = {}
            for ind in catalogue.CATALOGUE:
                if "district" not in ind.levels:
                    continue
                lo, hi = _RANGES[ind.id]
                v = rnd.uniform(lo, hi)
                row[ind.id] = float(round(v)) if ind.id in _COUNTS else round(v, 4)
            self.values[d.id] = row

    def set(self, district: str, ind_id: str, value: float | None, **extra: Any) -> None:
        """Give one district indicator a value (and optionally coverage, stale, status)."""
        self.values[district][ind_id] = value
        if extra:
            self.overrides[(district, ind_id)] = extra
        else:
            self.overrides.pop((district, ind_id), None)

    def district_indicators(self, district: str) -> list[Json]:
        """A district's indicators, in catalogue order."""
        out = []
        for ind_id, v in self.values[district].items():
            out.append(indicator(ind_id, v, **self.overrides.get((district, ind_id), {})))
        return out

    def city_indicators(self) -> list[Json]:
        """The city's indicators: sums or means of the districts'."""
        out = []
        for ind in catalogue.CATALOGUE:
            if ind.id in self.city_overrides:
                out.append(indicator(ind.id, **self.city_overrides[ind.id]))
                continue
            if "district" not in ind.levels:
                lo, hi = _RANGES[ind.id]
                out.append(indicator(ind.id, round((lo + hi) / 2, 4)))
                continue
            vals = [
                v
                for row in self.values.values()
                if (v := row[ind.id]) is not None and isinstance(v, int | float)
            ]
            if not vals:
                out.append(indicator(ind.id, None, coverage=0.0))
                continue
            value = sum(vals) if ind.id in _SUMMED else sum(vals) / len(vals)
            # A threshold on the figure itself judges the city's figure; a per-entity
            # threshold makes the city as bad as its worst entity (docs/indicators.md).
            status = status_of(ind.id, value)
            if ind.thresholds is None:
                status = _worst([status_of(ind.id, v) for v in vals])
            out.append(indicator(ind.id, round(value, 4), status=status))
        return out

    def vitals(self) -> Json:
        """GET /v1/vitals."""
        districts: list[Json] = []
        for d in catalogue.DISTRICTS:
            inds = self.district_indicators(d.id)
            districts.append(
                {
                    "id": d.id,
                    "name": {"zh": d.name_zh, "en": d.name_en},
                    "status": _worst([i["status"] for i in inds]),
                    "indicators": inds,
                }
            )
        city = self.city_indicators()
        return {
            "generated_at": self.generated_at.isoformat(),
            "stale": self.db_down,
            "status": _worst([d["status"] for d in districts] + [i["status"] for i in city]),
            "indicators": city,
            "districts": districts,
        }

    def district_detail(self, district: str) -> Json | None:
        """GET /v1/vitals/districts/{id}: the district with a few sites of each kind."""
        if district not in self.values:
            return None
        d = catalogue.DISTRICT_BY_ID[district]
        inds = self.district_indicators(district)
        rnd = random.Random(f"{self.seed}-{district}")
        sites = []
        for n in range(1, 5):
            occ = round(rnd.uniform(0.4, 0.97), 3)
            sites.append(
                {
                    "id": f"{district}-lot-{n}",
                    "name": f"{d.name_zh}停车场 P{n}",
                    "kind": "parking",
                    "status": status_of("parking.occupancy_ratio", occ),
                    "indicators": [
                        indicator("parking.occupancy_ratio", occ),
                        indicator("parking.free_spaces", float(rnd.randint(3, 120))),
                    ],
                }
            )
        for n in range(1, 4):
            fill = round(rnd.uniform(20, 92), 1)
            sites.append(
                {
                    "id": f"{district}-hut-{n}",
                    "name": f"{d.name_zh}第{n}垃圾厢房",
                    "kind": "waste",
                    "status": status_of("waste.fill_pct_mean", fill),
                    "indicators": [indicator("waste.fill_pct_mean", fill)],
                }
            )
        for n in range(1, 3):
            sites.append(
                {
                    "id": f"{district}-bld-{n}",
                    "name": f"{d.name_zh}大厦 {n}",
                    "kind": "energy",
                    "status": "normal",
                    "indicators": [
                        indicator("energy.load_kw", round(rnd.uniform(200, 1800), 1)),
                        indicator("energy.consumption_kwh_today", round(rnd.uniform(2e3, 2e4))),
                    ],
                }
            )
        return {
            "id": d.id,
            "name": {"zh": d.name_zh, "en": d.name_en},
            "status": _worst([i["status"] for i in inds]),
            "indicators": inds,
            "sites": sites,
        }


def series(ind_id: str, district: str | None, start: datetime, end: datetime, step_s: int) -> Json:
    """GET /v1/series: a smooth daily curve, deterministic per indicator and district."""
    lo, hi = _RANGES.get(ind_id, (0.0, 1.0))
    rnd = random.Random(f"{ind_id}-{district}")
    phase = rnd.uniform(0, 6.28)
    points: list[Json] = []
    t = start
    while t <= end:
        hour = t.astimezone(CITY_TZ).hour + t.minute / 60
        shape = 0.5 + 0.45 * math.sin((hour - 8) / 24 * 2 * math.pi + phase / 6)
        v = lo + (hi - lo) * shape + rnd.uniform(-0.02, 0.02) * (hi - lo)
        points.append({"ts": t.isoformat(), "value": round(v, 4), "min": None, "max": None})
        t += timedelta(seconds=step_s)
    return {
        "indicator": ind_id,
        "district": district or "city",
        "unit": catalogue.BY_ID[ind_id].unit,
        "step_s": step_s,
        "source": "samples",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "points": points,
    }


class FakeApi:
    """The canned API as a uvicorn server on a free loopback port, run in a thread."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.fail_status: int | None = None
        self.requests: dict[str, int] = {}
        self.not_modified = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- what a test changes --------------------------------------------------

    def update(self, fn: Any) -> None:
        """Change the scenario under the lock and stamp a new generated_at."""
        with self.lock:
            fn(self.scenario)
            self.scenario.generated_at = datetime.now(UTC)

    # -- HTTP ---------------------------------------------------------------

    def _json(self, request: Request, body: Json | None, status: int = 200) -> Response:
        if self.fail_status is not None:
            return JSONResponse({"detail": "injected failure"}, status_code=self.fail_status)
        if body is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        raw = json.dumps(body, ensure_ascii=False).encode()
        etag = '"' + hashlib.sha256(raw).hexdigest()[:16] + '"'
        if request.headers.get("if-none-match") == etag:
            self.not_modified += 1
            return Response(status_code=304, headers={"ETag": etag})
        return Response(
            raw, status_code=status, media_type="application/json", headers={"ETag": etag}
        )

    def _count(self, name: str) -> None:
        self.requests[name] = self.requests.get(name, 0) + 1

    async def _vitals(self, request: Request) -> Response:
        self._count("vitals")
        with self.lock:
            body = copy.deepcopy(self.scenario.vitals())
        return self._json(request, body)

    async def _district(self, request: Request) -> Response:
        self._count("district")
        with self.lock:
            body = self.scenario.district_detail(request.path_params["district"])
        return self._json(request, body)

    async def _alerts(self, request: Request) -> Response:
        self._count("alerts")
        with self.lock:
            body = {"items": copy.deepcopy(self.scenario.alerts)}
        return self._json(request, body)

    async def _series(self, request: Request) -> Response:
        self._count("series")
        q = request.query_params
        start = datetime.fromisoformat(q["from"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(q["to"].replace("Z", "+00:00"))
        return self._json(
            request, series(q["indicator"], q.get("district"), start, end, int(q["step"]))
        )

    def app(self) -> Starlette:
        """The ASGI app: API routes first, then the static folder at / (as the API mounts it)."""
        return Starlette(
            routes=[
                Route("/v1/vitals", self._vitals),
                Route("/v1/vitals/districts/{district}", self._district),
                Route("/v1/alerts", self._alerts),
                Route("/v1/series", self._series),
                Mount("/", StaticFiles(directory=STATIC, html=True)),
            ]
        )

    def start(self) -> None:
        """Serve until stop()."""
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for_port(self.port, 10)

    def stop(self) -> None:
        """Stop serving; the port then refuses connections."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None


def running(scenario: Scenario | None = None) -> Iterator[FakeApi]:
    """A started FakeApi, stopped afterwards (for fixtures)."""
    api = FakeApi(scenario)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def demo_alerts(now: datetime) -> list[Json]:
    """A realistic set of active alerts for screenshots."""

    def a(
        i: int,
        ind: str,
        district: str,
        entity: str,
        sev: str,
        value: float,
        limit: float,
        mins: float,
    ) -> Json:
        opened = (now - timedelta(minutes=mins)).isoformat()
        return {
            "id": f"a{i}",
            "indicator": ind,
            "entity": entity,
            "district": district,
            "severity": sev,
            "value": value,
            "threshold": limit,
            "state": "active",
            "opened_at": opened,
            "updated_at": opened,
            "cleared_at": None,
        }

    # Per-entity alerts carry the entity's reading: a hut's temperature or bin fill.
    return [
        a(1, "waste.fire_risk", "jingan", "hut-jingan-0142", "critical", 68.5, 60, 2.5),
        a(2, "waste.huts_full", "huangpu", "hut-huangpu-0031", "warning", 93.0, 90, 14),
        a(
            3,
            "parking.occupancy_ratio",
            "pudong",
            "lot-pudong-lujiazui-2",
            "warning",
            0.97,
            0.95,
            23,
        ),
        a(
            4,
            "energy.low_power_factor",
            "minhang",
            "meter-minhang-0877",
            "attention",
            0.84,
            0.9,
            41,
        ),
        a(5, "waste.huts_full", "xuhui", "hut-xuhui-0205", "attention", 82.0, 80, 66),
        a(6, "devices.online_ratio", "chongming", "chongming", "warning", 0.86, 0.9, 95),
        a(
            7,
            "energy.key_consumer_monitoring_rate",
            "baoshan",
            "baoshan",
            "attention",
            0.93,
            0.95,
            180,
        ),
    ]


def demo_scenario() -> Scenario:
    """A city on an ordinary afternoon with a few problems, for screenshots."""
    s = Scenario()
    s.set("jingan", "waste.fire_risk", 1.0)
    s.set("huangpu", "waste.huts_full", 3.0)
    s.set("huangpu", "waste.fill_pct_mean", 78.4)
    s.set("pudong", "parking.occupancy_ratio", 0.88)
    s.set("pudong", "parking.lots_near_full", 6.0)
    s.set("pudong", "waste.huts_full", 2.0)
    s.set("xuhui", "waste.huts_full", 1.0)
    s.set("minhang", "energy.low_power_factor", 1.0)
    s.set("chongming", "devices.online_ratio", 0.86, coverage=0.62, data_age_s=1450.0)
    s.set("baoshan", "energy.key_consumer_monitoring_rate", 0.93)
    s.set("jinshan", "parking.turnover_24h", None, coverage=0.0)
    s.city_overrides["devices.unassigned"] = {"value": 0.0}
    s.alerts = demo_alerts(datetime.now(UTC))
    return s
