"""Start-up mistakes, through the real `cityvitals` executable (docs/running.md).

Each configuration mistake an operator can make ends in one line on stderr that says
what is wrong and what to do (the variable to fix, `shared_preload_libraries`, or
`cityvitals migrate`), exit code 2, and never a traceback. The one exception is by
design: the API with its database away keeps serving (one warning line, `/readyz`
answers 503 meanwhile).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cityvitals.cli.localstack import PostgresServer, free_port, timescale_installed
from cityvitals.db.migrate import run_migrations
from cityvitals.settings import MigrateSettings
from cityvitals.startup import EXIT_STARTUP
from tests.fix_servers import PgAdmin, scratch_dir
from tests.fix_services import CITYVITALS, ServiceProcess, service_env, wait_until

pytestmark = pytest.mark.timeout(60)
# Every subprocess here ends well within this (the collector waits 1 s).
RUN_TIMEOUT_S = 30
PASSWORD = "right-password"


@dataclass
class Outcome:
    """What a `cityvitals` run did."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines(self) -> list[str]:
        """The non-blank lines of stderr."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def cityvitals(args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    """Run `cityvitals ARGS` to the end (in `cwd`, so that no .env is read)."""
    proc = subprocess.run(
        [CITYVITALS, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return Outcome(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def env_for(database_url: str, mqtt_url: str, **extra: str) -> dict[str, str]:
    """The environment of a run: harness servers, JSON logs, plus `extra` variables."""
    return service_env(database_url, mqtt_url, "startup/city", **extra)


def nobody_listens() -> int:
    """A loopback port with nothing behind it."""
    return free_port()


def assert_one_line(
    out: Outcome, command: str, *needles: str, warnings: int = 0, code: int = EXIT_STARTUP
) -> str:
    """The run failed with exactly one error line naming `needles`; return that line.

    `warnings` is the number of warning lines allowed before it (the collector's "waiting
    for …" line); nothing else may be on stderr.
    """
    assert "Traceback" not in out.output, out.output
    assert out.code == code, f"exit {out.code}, wanted {code}:\n{out.output}"
    prefix = f"cityvitals {command}: error: "
    errors = [line for line in out.lines() if line.startswith(prefix)]
    assert len(errors) == 1, f"wanted one line starting {prefix!r}:\n{out.output}"
    line = errors[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in the error line: {line}"
    others = [line for line in out.lines() if not line.startswith(prefix)]
    assert len(others) == warnings, f"wanted {warnings} other line(s) on stderr:\n{out.stderr}"
    for other in others:
        assert json.loads(other)["level"] == "warning", other
    return line


# --- servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_url(pg_admin: PgAdmin) -> Iterator[str]:
    """A database migrated (plain PostgreSQL) for the tests that get past the database."""
    name = f"startup_{uuid.uuid4().hex[:10]}"
    url = pg_admin.create(name)
    run_migrations(MigrateSettings(database_url=url, timescale="off"))
    try:
        yield url
    finally:
        pg_admin.drop(name)


@pytest.fixture
def empty_url(pg_admin: PgAdmin) -> Iterator[str]:
    """A database that exists and was never migrated."""
    name = f"startup_{uuid.uuid4().hex[:10]}"
    url = pg_admin.create(name)
    try:
        yield url
    finally:
        pg_admin.drop(name)


@pytest.fixture(scope="module")
def strict_postgres() -> Iterator[PostgresServer]:
    """A server that checks passwords (scram-sha-256) and does not preload TimescaleDB.

    The harness's servers trust every local login; this one is edited after `init` to
    ask for a password, as a production server does. TimescaleDB, where installed, is
    installed and not preloaded here.
    """
    with scratch_dir("cityvitals-pgs-") as folder:
        server = PostgresServer(
            data_dir=folder / "data",
            port=free_port(),
            durable=False,
            preload_timescale=False,
        )
        server.init()
        server.start()
        try:
            with psycopg.connect(server.url_for("postgres"), autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {server.user} PASSWORD '{PASSWORD}'")
                hba = server.data_dir / "pg_hba.conf"
                hba.write_text(
                    "local all all trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n"
                    "host all all ::1/128 scram-sha-256\n"
                )
                conn.execute("SELECT pg_reload_conf()")
            yield server
        finally:
            server.stop()


def strict_url(server: PostgresServer, database: str, password: str = PASSWORD) -> str:
    return f"postgresql://{server.user}:{password}@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def strict_db(strict_postgres: PostgresServer) -> Iterator[str]:
    """A fresh empty database on the strict server; its URL with the right password."""
    name = f"startup_{uuid.uuid4().hex[:10]}"
    admin = strict_url(strict_postgres, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield strict_url(strict_postgres, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --- (1) a bad CITYVITALS_* value ----------------------------------------------------------

BAD_VALUES = [
    ("migrate", "DATABASE_URL", "mysql://x"),
    ("migrate", "TIMESCALE", "maybe"),
    ("migrate", "LOG_FORMAT", "xml"),
    ("collector", "BATCH_MAX", "abc"),
    ("collector", "MQTT_URL", "http://x"),
    ("collector", "METRICS_PORT", "99999"),
    ("collector", "RECEIVE_MAXIMUM", "70000"),
    ("api", "API_PORT", "99999"),
    ("api", "DATABASE_URL", "mysql://x"),
    ("api", "POOL_MAX", "0"),
    ("simulate", "MQTT_URL", "http://x"),
    ("simulate", "DATABASE_URL", "mysql://x"),
    ("simulate", "TOPIC_PREFIX", "city/#"),
]


@pytest.mark.parametrize(("command", "variable", "value"), BAD_VALUES)
def test_bad_value_is_one_line(
    command: str, variable: str, value: str, mqtt_url: str, tmp_path: Path
) -> None:
    env = env_for("postgresql://u:p@127.0.0.1:1/x", mqtt_url)
    env[f"CITYVITALS_{variable}"] = value
    args = [command] + (["--duration", "1", "--register", "none"] if command == "simulate" else [])
    out = cityvitals(args, env, tmp_path)
    line = assert_one_line(out, command, f"CITYVITALS_{variable}", repr(value))
    assert "Value error" not in line


@pytest.mark.parametrize("command", ["migrate", "collector", "api"])
def test_unknown_time_zone_is_one_line(
    command: str, migrated_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    env = env_for(
        migrated_url,
        mqtt_url,
        local_tz="Mars/Olympus_Mons",
        api_port=str(free_port()),
        metrics_port="0",
        startup_wait_s="1",
    )
    proc = subprocess.Popen(
        [CITYVITALS, command],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    out = Outcome(proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    assert_one_line(out, command, "CITYVITALS_LOCAL_TZ")


# --- (2) the database unreachable ----------------------------------------------------------


def test_migrate_database_unreachable(mqtt_url: str, tmp_path: Path) -> None:
    url = f"postgresql://cityvitals:x@127.0.0.1:{nobody_listens()}/cityvitals"
    out = cityvitals(["migrate"], env_for(url, mqtt_url), tmp_path)
    assert_one_line(out, "migrate", "cannot reach the database", "CITYVITALS_DATABASE_URL")


def test_collector_database_unreachable(mqtt_url: str, tmp_path: Path) -> None:
    url = f"postgresql://cityvitals:x@127.0.0.1:{nobody_listens()}/cityvitals"
    env = env_for(url, mqtt_url, startup_wait_s="1", metrics_port="0")
    out = cityvitals(["collector"], env, tmp_path)
    assert_one_line(
        out, "collector", "cannot reach the database", "CITYVITALS_DATABASE_URL", warnings=1
    )
    waiting = json.loads(out.lines()[0])
    assert waiting["event"] == "database_unreachable"
    assert "CITYVITALS_DATABASE_URL" in waiting["detail"]


def readyz(port: int) -> int | None:
    """The status /readyz answers, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return None


def start_api(env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    proc = ServiceProcess(["api"], env, tmp_path / "api.log")
    out = proc.log_path.open("ab")
    proc.proc = subprocess.Popen(
        [CITYVITALS, "api"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return proc


def test_api_database_unreachable_keeps_serving(mqtt_url: str, tmp_path: Path) -> None:
    url = f"postgresql://cityvitals:x@127.0.0.1:{nobody_listens()}/cityvitals"
    port = free_port()
    api = start_api(env_for(url, mqtt_url, api_port=str(port)), tmp_path)
    assert api.proc is not None
    proc = api.proc
    try:
        wait_until(
            lambda: readyz(port) is not None or proc.poll() is not None, 30, "the API to answer"
        )
        assert readyz(port) == 503, api.log()
        running = api.log()
        assert proc.poll() is None, f"the API exited:\n{running}"
    finally:
        code = api.stop(timeout_s=20)
    log = api.log()
    assert "Traceback" not in running, running
    lines = [line for line in running.splitlines() if line.strip()]
    ours = [line for line in lines if "CITYVITALS_DATABASE_URL" in line]
    assert len(ours) == 1, running
    warning = json.loads(ours[0])
    assert warning["level"] == "warning"
    assert warning["event"] == "database_unreachable"
    assert "cannot reach the database" in warning["detail"]
    # libpq's hint is a second line; the pools' retries come as one line each, once.
    assert not [line for line in lines if line[0].isspace()], running
    assert len(lines) == len(set(lines)), running
    assert code == 0, log
    # Stopping ends the pool's own tasks through the pool, never by cancelling them.
    assert "Traceback" not in log, log


# --- (3) a refused login, a database that does not exist ----------------------------------


@pytest.mark.parametrize("command", ["migrate", "collector", "api"])
def test_wrong_password(
    command: str, strict_postgres: PostgresServer, mqtt_url: str, tmp_path: Path
) -> None:
    url = strict_url(strict_postgres, "cityvitals", password="wrong-password")
    env = env_for(url, mqtt_url, startup_wait_s="1", metrics_port="0", api_port=str(free_port()))
    out = cityvitals([command], env, tmp_path)
    line = assert_one_line(out, command, "refused the login", "CITYVITALS_DATABASE_URL")
    assert "wrong-password" not in line


@pytest.mark.parametrize("command", ["migrate", "collector", "api"])
def test_unknown_role(command: str, pg_admin: PgAdmin, mqtt_url: str, tmp_path: Path) -> None:
    # A trusting server still refuses a role it does not know (SQLSTATE 28000).
    info = psycopg.conninfo.conninfo_to_dict(pg_admin.admin_url)
    url = f"postgresql://no_such_role@{info['host']}:{info['port']}/postgres"
    env = env_for(url, mqtt_url, startup_wait_s="1", metrics_port="0", api_port=str(free_port()))
    out = cityvitals([command], env, tmp_path)
    assert_one_line(out, command, "refused the login", "CITYVITALS_DATABASE_URL")


@pytest.mark.parametrize("command", ["migrate", "collector", "api"])
def test_database_does_not_exist(
    command: str, pg_admin: PgAdmin, mqtt_url: str, tmp_path: Path
) -> None:
    url = pg_admin.uri_for(f"missing_{uuid.uuid4().hex[:8]}")
    env = env_for(url, mqtt_url, startup_wait_s="1", metrics_port="0", api_port=str(free_port()))
    out = cityvitals([command], env, tmp_path)
    assert_one_line(out, command, "does not exist", "CITYVITALS_DATABASE_URL")


# --- (4) the broker unreachable -----------------------------------------------------------


def test_collector_broker_unreachable(migrated_url: str, tmp_path: Path) -> None:
    broker = f"mqtt://127.0.0.1:{nobody_listens()}"
    env = env_for(migrated_url, broker, startup_wait_s="1", metrics_port="0")
    out = cityvitals(["collector"], env, tmp_path)
    assert_one_line(
        out, "collector", "cannot reach the MQTT broker", "CITYVITALS_MQTT_URL", warnings=1
    )
    waiting = json.loads(out.lines()[0])
    assert waiting["event"] == "broker_unreachable"
    assert "CITYVITALS_MQTT_URL" in waiting["detail"]


def test_simulate_broker_unreachable(migrated_url: str, tmp_path: Path) -> None:
    broker = f"mqtt://127.0.0.1:{nobody_listens()}"
    out = cityvitals(
        ["simulate", "--duration", "1", "--register", "none"],
        env_for(migrated_url, broker),
        tmp_path,
    )
    assert_one_line(out, "simulate", "cannot reach the MQTT broker", "CITYVITALS_MQTT_URL")


# --- (5) a port in use -------------------------------------------------------------------


def test_api_port_in_use(migrated_url: str, mqtt_url: str, taken_port: int, tmp_path: Path) -> None:
    env = env_for(migrated_url, mqtt_url, api_port=str(taken_port))
    out = cityvitals(["api"], env, tmp_path)
    assert_one_line(out, "api", str(taken_port), "in use", "CITYVITALS_API_PORT")


@pytest.mark.parametrize(
    "content",
    ['{"nope.x": {}}', '{"parking.occupancy_ratio": {"attention": "high"}}', "not json"],
    ids=["unknown-indicator", "not-a-number", "not-json"],
)
def test_api_bad_thresholds_file(
    migrated_url: str, mqtt_url: str, tmp_path: Path, content: str
) -> None:
    bad = tmp_path / "thresholds.json"
    bad.write_text(content)
    env = env_for(migrated_url, mqtt_url, api_port=str(free_port()), thresholds_file=str(bad))
    out = cityvitals(["api"], env, tmp_path)
    assert_one_line(out, "api", "thresholds", "CITYVITALS_THRESHOLDS_FILE")


def test_collector_metrics_port_in_use(
    migrated_url: str, mqtt_url: str, taken_port: int, tmp_path: Path
) -> None:
    env = env_for(migrated_url, mqtt_url, metrics_port=str(taken_port), startup_wait_s="1")
    out = cityvitals(["collector"], env, tmp_path)
    assert_one_line(out, "collector", str(taken_port), "CITYVITALS_METRICS_PORT")


# --- (6) TimescaleDB installed but not preloaded -----------------------------------------

needs_timescale = pytest.mark.skipif(
    not timescale_installed(),
    reason="TimescaleDB is not installed for this PostgreSQL: the not-preloaded case "
    "cannot be set up here",
)


@needs_timescale
def test_timescale_auto_without_preload_warns_once(
    strict_db: str, mqtt_url: str, tmp_path: Path
) -> None:
    out = cityvitals(["migrate"], env_for(strict_db, mqtt_url, timescale="auto"), tmp_path)
    assert out.code == 0, out.output
    assert "Traceback" not in out.output
    assert out.stdout.strip().endswith("(postgresql)"), out.stdout
    warnings = [json.loads(line) for line in out.lines() if '"warning"' in line]
    assert len(warnings) == 1, out.stderr
    assert "shared_preload_libraries" in warnings[0]["event"], warnings
    assert sum("shared_preload_libraries" in line for line in out.output.splitlines()) == 1
    with psycopg.connect(strict_db) as conn:
        row = conn.execute("SELECT value FROM schema_info WHERE key = 'storage'").fetchone()
    assert row == ("postgresql",)


@needs_timescale
def test_timescale_on_without_preload_is_one_line(
    strict_db: str, mqtt_url: str, tmp_path: Path
) -> None:
    out = cityvitals(["migrate"], env_for(strict_db, mqtt_url, timescale="on"), tmp_path)
    assert_one_line(out, "migrate", "CITYVITALS_TIMESCALE=on", "shared_preload_libraries")
    with psycopg.connect(strict_db) as conn:
        row = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
    assert row == (None,), "a refused migrate must leave the database untouched"


# --- (7) a database that is not migrated -------------------------------------------------


def test_collector_database_not_migrated(empty_url: str, mqtt_url: str, tmp_path: Path) -> None:
    env = env_for(empty_url, mqtt_url, startup_wait_s="1", metrics_port="0")
    out = cityvitals(["collector"], env, tmp_path)
    assert_one_line(out, "collector", "not migrated", "cityvitals migrate")


@pytest.mark.parametrize(
    ("args", "command"),
    [(["rebuild"], "rebuild"), (["dead-letters", "replay"], "dead-letters replay")],
)
def test_maintenance_commands_on_a_database_not_migrated(
    empty_url: str, mqtt_url: str, tmp_path: Path, args: list[str], command: str
) -> None:
    out = cityvitals(args, env_for(empty_url, mqtt_url), tmp_path)
    assert_one_line(out, command, "not migrated", "cityvitals migrate")


def test_migrate_with_a_policy_that_is_not_an_interval(
    migrated_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    env = env_for(migrated_url, mqtt_url, retain_raw="forever")
    out = cityvitals(["migrate"], env, tmp_path)
    assert_one_line(out, "migrate", "CITYVITALS_RETAIN_RAW", "interval")


def test_simulate_register_db_not_migrated(empty_url: str, mqtt_url: str, tmp_path: Path) -> None:
    out = cityvitals(
        ["simulate", "--register", "db", "--register-only", "--scale", "0.05"],
        env_for(empty_url, mqtt_url),
        tmp_path,
    )
    assert_one_line(out, "simulate", "not migrated", "cityvitals migrate")


def test_simulate_register_api_without_token(mqtt_url: str, tmp_path: Path) -> None:
    out = cityvitals(
        ["simulate", "--register", "api", "--register-only", "--scale", "0.05"],
        env_for("postgresql://u@127.0.0.1:1/x", mqtt_url),
        tmp_path,
    )
    assert_one_line(out, "simulate", "CITYVITALS_ADMIN_TOKEN")


def test_simulate_register_api_unreachable(mqtt_url: str, tmp_path: Path) -> None:
    env = env_for(
        "postgresql://u@127.0.0.1:1/x",
        mqtt_url,
        admin_token="t0ken",
        api_url=f"http://127.0.0.1:{nobody_listens()}",
    )
    out = cityvitals(
        ["simulate", "--register", "api", "--register-only", "--scale", "0.05"], env, tmp_path
    )
    assert_one_line(out, "simulate", "cityvitals api", "CITYVITALS_API_URL")


# --- make run -----------------------------------------------------------------------------


def run_stack(tmp_path: Path, **variables: str) -> Outcome:
    """`make run`'s script from a copy of its own, so that its `.run/` is under tmp_path."""
    script = tmp_path / "checkout" / "scripts" / "run_stack.py"
    script.parent.mkdir(parents=True)
    script.write_text((Path(__file__).parent.parent / "scripts" / "run_stack.py").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")}
    ports = ("RUN_PG_PORT", "RUN_MQTT_PORT", "API_PORT", "METRICS_PORT")
    env |= {f"CITYVITALS_{name}": str(free_port()) for name in ports}
    env |= {f"CITYVITALS_{k.upper()}": v for k, v in variables.items()}
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=script.parent.parent,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return Outcome(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def test_make_run_port_in_use(taken_port: int, tmp_path: Path) -> None:
    out = run_stack(tmp_path, api_port=str(taken_port))
    assert out.code == 1, out.output
    assert "Traceback" not in out.output
    assert len(out.lines()) == 1, out.stderr
    assert str(taken_port) in out.stderr
    assert "CITYVITALS_API_PORT" in out.stderr


def test_make_run_bad_port_value(tmp_path: Path) -> None:
    out = run_stack(tmp_path, run_pg_port="five")
    assert out.code == 1, out.output
    assert "Traceback" not in out.output
    assert len(out.lines()) == 1, out.stderr
    assert "CITYVITALS_RUN_PG_PORT" in out.stderr
