"""`cityvitals devices import FILE`: the registry import from the command line.

The file is read in pieces and streamed into the database (`service.import_stream`);
a progress bar is drawn on stderr when it is a terminal, and the report is printed
on stdout as JSON.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import orjson
import psycopg
from psycopg import AsyncConnection
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from cityvitals import logs
from cityvitals.aio import run_sync
from cityvitals.registry.models import ImportReport
from cityvitals.registry.parse import Format, format_for_file
from cityvitals.registry.service import PIECE_BYTES, import_stream
from cityvitals.settings import CommonSettings
from cityvitals.startup import StartupError, database_error
from cityvitals.timeutil import utcnow

# Exit codes: every row imported, some rows failed, nothing could be read or stored.
ALL_IMPORTED, SOME_FAILED, UNREADABLE = 0, 1, 2

# Told how many bytes were read; told None once the whole file has been.
Watch = Callable[[int | None], None]


@contextmanager
def _progress(total: int) -> Iterator[Watch]:
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        reading = bar.add_task("reading", total=total)

        def watch(n: int | None) -> None:
            if n is None:
                # The rows are all staged; registering them is one statement.
                bar.add_task("registering", total=None)
            else:
                bar.advance(reading, n)

        yield watch


async def _chunks(file: BinaryIO, head: bytes, watch: Watch) -> AsyncIterator[bytes]:
    data = head
    while data:
        watch(len(data))
        yield data
        data = file.read(PIECE_BYTES)
    watch(None)


async def _import(file: BinaryIO, head: bytes, fmt: Format, dsn: str, watch: Watch) -> ImportReport:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await import_stream(conn, _chunks(file, head, watch), fmt=fmt, now=utcnow())


def import_file_cli(path: Path) -> int:
    """Import a CSV or JSON file into the registry; the exit code (0, 1 or 2).

    A database that cannot be reached, or is not migrated, raises StartupError (the
    command's one line); a file that cannot be read is reported here.
    """
    settings = CommonSettings()
    # Logs go to stderr: stdout is the report.
    logs.configure(settings.log_level, settings.log_format)
    dsn = settings.psycopg_dsn
    try:
        with path.open("rb") as file, _progress(path.stat().st_size) as watch:
            head = file.read(PIECE_BYTES)
            fmt = format_for_file(path, head)
            report = run_sync(_import(file, head, fmt, dsn, watch))
    except (OSError, ValueError) as err:
        sys.stderr.write(f"cannot import {path}: {err}; nothing was stored\n")
        return UNREADABLE
    except psycopg.errors.UndefinedTable:
        raise StartupError(
            "the database has no registry table", "run `cityvitals migrate` first"
        ) from None
    except psycopg.OperationalError as err:
        raise database_error(err, dsn) from None
    except psycopg.Error as err:
        sys.stderr.write(f"the database refused the import, nothing was stored: {err}\n")
        return UNREADABLE
    sys.stdout.write(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return SOME_FAILED if report.failed else ALL_IMPORTED
