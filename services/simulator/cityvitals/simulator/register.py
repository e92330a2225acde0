"""Put the fleet into the device registry (docs/registry.md): through the API, or straight into
the database through the registry library (`cityvitals.registry`)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import psycopg
import structlog

from cityvitals.aio import run_sync
from cityvitals.registry import service as registry
from cityvitals.registry.models import ImportReport
from cityvitals.timeutil import utcnow

from .fleet import Device

log = structlog.get_logger("cityvitals.simulator.register")

# Devices per import request: a 200,000-device fleet goes in as 40 requests of about
# 1.3 MB, well under the API's default 10 MB body limit.
API_CHUNK = 5000


class RegisterError(RuntimeError):
    """The registry refused the fleet or could not be reached."""


def register_api(
    devices: Sequence[Device], *, api_url: str, token: str, timeout_s: float = 60.0
) -> int:
    """Bulk-import the devices with `POST {api_url}/v1/devices/import` (JSON); the count."""
    url = api_url.rstrip("/") + "/v1/devices/import"
    if not url.startswith(("http://", "https://")):
        raise RegisterError(f"API URL must be http:// or https://, got {api_url!r}")
    done = 0
    for start in range(0, len(devices), API_CHUNK):
        chunk = [d.registry_record() for d in devices[start : start + API_CHUNK]]
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=json.dumps(chunk, ensure_ascii=False).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as err:
            body = err.read()[:500].decode(errors="replace")
            raise RegisterError(f"POST {url} answered {err.code}: {body}") from err
        except (urllib.error.URLError, OSError) as err:
            raise RegisterError(f"POST {url} failed: {err}") from err
        # The import stores the good rows and reports the bad ones; a fleet that is
        # only partly registered must not pass as registered.
        with contextlib.suppress(ValueError):
            failed = json.loads(body or b"{}").get("failed") or []
            if failed:
                raise RegisterError(
                    f"the API refused {len(failed)} of {len(chunk)} devices, "
                    f"for example: {failed[:3]}"
                )
        done += len(chunk)
        log.info("devices_imported", via="api", count=done, total=len(devices))
    return done


def register_db(devices: Sequence[Device], *, dsn: str) -> int:
    """Register the devices straight into the database, through the registry library.

    The same validation and the same refusal of a kind change as the API's import;
    a fleet that is only partly registered raises RegisterError. The count.
    """
    report = run_sync(_import(devices, dsn))
    if report.failed:
        failed = [f.model_dump() for f in report.failed[:3]]
        raise RegisterError(
            f"the registry refused {len(report.failed)} of {len(devices)} devices, "
            f"for example: {failed}"
        )
    log.info("devices_imported", via="db", count=report.imported)
    return report.imported


async def _import(devices: Sequence[Device], dsn: str) -> ImportReport:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        records = (d.registry_record() for d in devices)
        return await registry.import_records(conn, records, now=utcnow())
