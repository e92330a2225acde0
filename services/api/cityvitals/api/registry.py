"""The device registry: reads, upserts and bulk import (CSV or JSON), shared by API and CLI."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from cityvitals.api.models import DEFAULT_OPENING_HOURS, DeviceIn, ImportFailure, ImportReport
from cityvitals.api.queries import ONLINE_SQL, base_params

SELECT_DEVICE = sql.SQL(
    "SELECT d.device_id, d.kind, d.district, d.site, d.name, d.lat, d.lon, "
    "d.report_interval_s, d.opening_hours, d.key_consumer, d.contract_kw, d.auto_registered, "
    "d.created_at, d.updated_at, s.last_seen_at AS last_seen, {online} AS online, "
    "CASE WHEN s.status_online IS NULL THEN NULL WHEN s.status_online THEN 'online' "
    "ELSE 'offline' END AS retained_status "
    "FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id"
).format(online=ONLINE_SQL)
# Registering a device (PUT or import) replaces its entry and marks it as registered.
UPSERT = (
    "INSERT INTO devices (device_id, kind, district, site, name, lat, lon, report_interval_s, "
    "opening_hours, key_consumer, contract_kw, auto_registered, created_at, updated_at) "
    "VALUES (%(device_id)s, %(kind)s, %(district)s, %(site)s, %(name)s, %(lat)s, %(lon)s, "
    "%(report_interval_s)s, %(opening_hours)s, %(key_consumer)s, %(contract_kw)s, false, "
    "%(now)s, %(now)s) "
    "ON CONFLICT (device_id) DO UPDATE SET district = excluded.district, "
    "site = excluded.site, name = excluded.name, lat = excluded.lat, lon = excluded.lon, "
    "report_interval_s = excluded.report_interval_s, opening_hours = excluded.opening_hours, "
    "key_consumer = excluded.key_consumer, contract_kw = excluded.contract_kw, "
    "auto_registered = false, updated_at = excluded.updated_at "
    "WHERE devices.kind = excluded.kind "
    "RETURNING (xmax = 0) AS created"
)
# Import batches: big enough to amortise round trips, small enough to report rows.
IMPORT_CHUNK = 500


def device_out(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row as the API shows it (waste huts get their default opening hours)."""
    out = dict(row)
    if out["kind"] == "waste" and out["opening_hours"] is None:
        out["opening_hours"] = [{"open": o, "close": c} for o, c in DEFAULT_OPENING_HOURS]
    return out


async def get_device(
    conn: AsyncConnection[Any], device_id: str, now: datetime
) -> dict[str, Any] | None:
    """One device with its liveness, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            SELECT_DEVICE + sql.SQL(" WHERE d.device_id = %(id)s"),
            base_params(now) | {"id": device_id},
        )
        row = await cur.fetchone()
    return device_out(row) if row else None


async def list_devices(
    conn: AsyncConnection[Any],
    *,
    now: datetime,
    kind: str | None,
    district: str | None,
    online: bool | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of devices in id order after `after` (keyset pagination)."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params = base_params(now) | {"limit": limit}
    if kind is not None:
        where.append(sql.SQL("d.kind = %(kind)s"))
        params["kind"] = kind
    if district == "unassigned":
        where.append(sql.SQL("d.district IS NULL"))
    elif district is not None:
        where.append(sql.SQL("d.district = %(district)s"))
        params["district"] = district
    if online is not None:
        where.append(sql.SQL("({}) = %(online)s").format(ONLINE_SQL))
        params["online"] = online
    if after is not None:
        where.append(sql.SQL("d.device_id > %(after)s"))
        params["after"] = after
    query = sql.SQL("{} WHERE {} ORDER BY d.device_id LIMIT %(limit)s").format(
        SELECT_DEVICE, sql.SQL(" AND ").join(where)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [device_out(r) for r in await cur.fetchall()]


def _params(device_id: str, dev: DeviceIn, now: datetime) -> dict[str, Any]:
    data = dev.model_dump(mode="json")
    data["device_id"] = device_id
    data["now"] = now
    data["opening_hours"] = Jsonb(data["opening_hours"]) if dev.opening_hours is not None else None
    return data


@dataclass
class UpsertResult:
    """Whether a device was created, updated, or refused for a kind change."""

    created: bool = False
    conflict: bool = False


async def upsert_device(
    conn: AsyncConnection[Any], device_id: str, dev: DeviceIn, now: datetime
) -> UpsertResult:
    """Create or replace a registry entry; a kind change is refused (409)."""
    async with conn.cursor() as cur:
        await cur.execute(UPSERT, _params(device_id, dev, now))
        row = await cur.fetchone()
    if row is None:
        return UpsertResult(conflict=True)
    return UpsertResult(created=bool(row[0]))


# -- bulk import -------------------------------------------------------------------


@dataclass
class ParsedImport:
    """Rows that validated, and the ones that did not."""

    good: list[tuple[int, str, DeviceIn]] = field(default_factory=list)
    failed: list[ImportFailure] = field(default_factory=list)


def _csv_value(name: str, raw: str) -> Any:
    raw = raw.strip()
    if raw == "":
        return None
    if name == "opening_hours":
        # `07:00-09:00;18:00-20:00`
        windows = []
        for part in raw.split(";"):
            open_, _, close = part.strip().partition("-")
            windows.append({"open": open_.strip(), "close": close.strip()})
        return windows
    if name == "key_consumer":
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "y", "t"):
            return True
        if lowered in ("false", "0", "no", "n", "f"):
            return False
        return raw
    return raw


def _error_text(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors(include_url=False, include_context=False):
        loc = ".".join(str(p) for p in e["loc"]) or "row"
        out.append(f"{loc}: {e['msg']}")
    return out


def _validate(rows: Iterable[tuple[int, dict[str, Any]]]) -> ParsedImport:
    parsed = ParsedImport()
    seen: dict[str, int] = {}
    for number, raw in rows:
        device_id = raw.get("device_id")
        ident = device_id if isinstance(device_id, str) else None
        if not ident:
            parsed.failed.append(
                ImportFailure(row=number, device_id=None, errors=["device_id: required"])
            )
            continue
        if ident in seen:
            parsed.failed.append(
                ImportFailure(
                    row=number,
                    device_id=ident,
                    errors=[f"device_id: duplicate of row {seen[ident]}"],
                )
            )
            continue
        try:
            dev = DeviceIn.model_validate(raw)
        except ValidationError as err:
            parsed.failed.append(
                ImportFailure(row=number, device_id=ident, errors=_error_text(err))
            )
            continue
        seen[ident] = number
        parsed.good.append((number, ident, dev))
    return parsed


def parse_csv(text: str) -> ParsedImport:
    """Rows of a CSV file with a header naming registry fields (`device_id` first)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "device_id" not in reader.fieldnames:
        raise ValueError("CSV header must name the columns and include device_id")
    rows = []
    for number, rec in enumerate(reader, start=1):
        extra = rec.pop(None, None)
        row: dict[str, Any] = {
            k.strip(): _csv_value(k.strip(), v or "") for k, v in rec.items() if k is not None
        }
        if extra:
            row["__extra__"] = extra
        rows.append((number, {k: v for k, v in row.items() if v is not None}))
    return _validate(rows)


def parse_json(body: bytes) -> ParsedImport:
    """A JSON array of device objects, or `{"devices": [...]}`."""
    data = orjson.loads(body)
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        data = data["devices"]
    if not isinstance(data, list):
        raise ValueError('expected a JSON array of devices or {"devices": [...]}')
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, item in enumerate(data, start=1):
        rows.append((number, item if isinstance(item, dict) else {"__not_an_object__": item}))
    return _validate(rows)


async def store_import(
    conn: AsyncConnection[Any], parsed: ParsedImport, now: datetime
) -> ImportReport:
    """Upsert the good rows (each chunk in one transaction); report every failure."""
    failed = list(parsed.failed)
    imported = 0
    good: Sequence[tuple[int, str, DeviceIn]] = parsed.good
    for start in range(0, len(good), IMPORT_CHUNK):
        chunk = good[start : start + IMPORT_CHUNK]
        async with conn.transaction(), conn.cursor() as cur:
            for number, device_id, dev in chunk:
                await cur.execute(UPSERT, _params(device_id, dev, now))
                if await cur.fetchone() is None:
                    failed.append(
                        ImportFailure(
                            row=number,
                            device_id=device_id,
                            errors=["kind: the device is registered with another kind"],
                        )
                    )
                else:
                    imported += 1
    failed.sort(key=lambda f: f.row)
    return ImportReport(imported=imported, failed=failed)
