"""Start-up mistakes as one line each: what is wrong and what to do.

Every `cityvitals` subcommand runs under `reported()`: a mistake an operator makes
(a bad `CITYVITALS_*` value, a database that refuses the login, a broker nobody
listens on, a port in use, TimescaleDB installed but not preloaded) ends the process
with one line on stderr and exit code 2, never a traceback. Faults that happen while
a service runs (outages) are the services' own business and are retried there.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
from pydantic import ValidationError

# Exit code of a start-up mistake (1 is left to "ran, but something failed").
EXIT_STARTUP = 2
# SQLSTATEs of a login the server refused (PostgreSQL appendix A).
_AUTH_FAILED = {"28P01", "28000"}
_NO_DATABASE = "3D000"
# What the server says, in libpq's message, when it refuses a login (SQLSTATE 28xxx).
_LOGIN_REFUSED = (
    "password authentication failed",
    "authentication failed for user",
    "no pg_hba.conf entry",
    "is not permitted to log in",
    "password is expired",
    "no password supplied",
)


class StartupError(Exception):
    """A start-up mistake: `what` went wrong, `fix` says what to do."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}: {fix}")
        self.what = what
        self.fix = fix


def settings_error(err: ValidationError) -> StartupError:
    """One line naming every `CITYVITALS_*` variable that was refused, and why."""
    parts = []
    for e in err.errors():
        name = "CITYVITALS_" + "_".join(str(p) for p in e["loc"]).upper()
        given = e.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        # A validator's own message reads better without pydantic's "Value error, ".
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {msg}{shown}")
    return StartupError("bad configuration: " + "; ".join(parts), "fix the variable(s) or .env")


def _where(dsn: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the database"
    return f"{info.get('user', '?')}@{info.get('host', '?')}:{info.get('port', 5432)}/" + str(
        info.get("dbname", "?")
    )


def _server_says(text: str) -> str:
    """The server's own reason out of libpq's message (after `FATAL:`), else the text."""
    _, found, reason = text.partition("FATAL:")
    return reason.strip() if found else text


def database_error(err: psycopg.Error, dsn: str) -> StartupError:
    """What a failed connection to the database means for the operator."""
    where = _where(dsn)
    # libpq reports a refused connection without a SQLSTATE: the server's text decides.
    state = getattr(err, "sqlstate", None)
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reason = _server_says(text)
    unknown_role = 'role "' in text and "does not exist" in text
    if state in _AUTH_FAILED or unknown_role or any(sign in text for sign in _LOGIN_REFUSED):
        return StartupError(
            f"the database refused the login for {where} ({reason})",
            "check the user and password in CITYVITALS_DATABASE_URL",
        )
    if state == _NO_DATABASE or ("database" in text and "does not exist" in text):
        return StartupError(
            f"database {where} does not exist",
            "create it (CREATE DATABASE) or fix the name in CITYVITALS_DATABASE_URL",
        )
    return StartupError(
        f"cannot reach the database at {where} ({text})",
        "start PostgreSQL or fix the host and port in CITYVITALS_DATABASE_URL",
    )


def check_database(dsn: str, *, timeout_s: float = 5.0) -> None:
    """Connect once; raise a StartupError that says what to do when that fails."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        raise database_error(err, dsn) from None


def is_transient(err: StartupError) -> bool:
    """Whether waiting may fix it (the server is away) rather than a configuration change."""
    return err.what.startswith("cannot reach")


def check_broker(host: str, port: int, *, timeout_s: float = 5.0) -> None:
    """Open and close a TCP connection to the broker; raise a StartupError when refused."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise StartupError(
            f"cannot reach the MQTT broker at {host}:{port} ({reason})",
            "start Mosquitto or fix the host and port in CITYVITALS_MQTT_URL",
        ) from None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(command: str, err: StartupError) -> int:
    """Write the one line on stderr; the exit code to end with."""
    sys.stderr.write(f"cityvitals {command}: error: {_one_line(err.what)}: {_one_line(err.fix)}\n")
    sys.stderr.flush()
    return EXIT_STARTUP


def fail(command: str, err: StartupError) -> NoReturn:
    """Write the one line and exit."""
    raise SystemExit(report(command, err))


@contextmanager
def reported(command: str) -> Iterator[None]:
    """Turn start-up mistakes raised inside into one line and exit code 2."""
    try:
        yield
    except StartupError as err:
        fail(command, err)
    except ValidationError as err:
        fail(command, settings_error(err))


class OneLineRepeats(logging.Filter):
    """Standard-library records as one line each, and the same one at most every `every_s`.

    A connection pool retrying a database that is away logs each attempt with libpq's
    multi-line hint; after the service's own warning line, those add nothing but noise.
    """

    def __init__(self, every_s: float = 300.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record to its first line; drop it when it repeats too soon."""
        text = record.getMessage().strip()
        line = text.splitlines()[0] if text else text
        record.msg, record.args = line, None
        now = time.monotonic()
        if now - self._last.get(line, float("-inf")) < self.every_s:
            return False
        if len(self._last) > 256:
            self._last.clear()
        self._last[line] = now
        return True


NOT_MIGRATED = StartupError(
    "the database is not migrated to this version", "run `cityvitals migrate` first"
)
