"""A database outage: the API keeps serving the last snapshot, marked stale, and recovers."""

from __future__ import annotations

import httpx

from cityvitals.api.main import create_app
from cityvitals.cli.localstack import PostgresServer
from cityvitals.settings import ApiSettings
from tests.api.test_openapi import serve
from tests.fix_services import wait_until


def test_database_outage_serves_stale_snapshot_and_readyz_503(
    private_db: tuple[PostgresServer, str],
) -> None:
    private_postgres, url = private_db
    settings = ApiSettings(database_url=url, snapshot_interval_s=0.2)
    with serve(create_app(settings)) as base, httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/v1/vitals").json()["stale"] is False
        private_postgres.stop()
        wait_until(lambda: http.get("/readyz").status_code == 503, 30, "readyz 503")
        wait_until(lambda: http.get("/v1/vitals").json()["stale"] is True, 30, "stale snapshot")
        doc = http.get("/v1/vitals").json()
        assert all(i["stale"] for i in doc["indicators"])
        assert "cityvitals_api_database_up 0.0" in http.get("/metrics").text
        assert http.get("/v1/devices").status_code == 503
        private_postgres.start()
        wait_until(lambda: http.get("/v1/vitals").json()["stale"] is False, 60, "fresh snapshot")
        assert http.get("/readyz").status_code == 200
        assert "cityvitals_api_database_up 1.0" in http.get("/metrics").text
