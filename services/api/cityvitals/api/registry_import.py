"""`cityvitals devices import FILE`: the bulk import of the API, from the command line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import psycopg
from psycopg import AsyncConnection

from cityvitals.api import registry
from cityvitals.api.models import ImportReport
from cityvitals.settings import ApiSettings
from cityvitals.timeutil import utcnow


async def import_body(path: Path, body: bytes, settings: ApiSettings) -> ImportReport:
    """Import a CSV or JSON file (JSON when it ends in .json or starts with `[`/`{`)."""
    looks_json = path.suffix.lower() == ".json" or body.lstrip()[:1] in (b"[", b"{")
    parsed = (
        registry.parse_json(body) if looks_json else registry.parse_csv(body.decode("utf-8-sig"))
    )
    async with await AsyncConnection.connect(settings.psycopg_dsn, autocommit=True) as conn:
        return await registry.store_import(conn, parsed, utcnow())


def import_file_cli(path: Path) -> int:
    """0 when every row was imported, 1 when some failed, 2 when nothing could be read."""
    settings = ApiSettings()
    try:
        body = Path(path).read_bytes()
        report = asyncio.run(import_body(Path(path), body, settings))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        sys.stderr.write(f"cannot import {path}: {err}\n")
        return 2
    except psycopg.OperationalError as err:
        sys.stderr.write(f"database unavailable: {err}\n")
        return 2
    sys.stdout.write(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 1 if report.failed else 0
