"""Fixtures for the real servers: PostgreSQL (plain and TimescaleDB) and Mosquitto.

The database fixtures are parametrized over both storage paths: every test that takes
a database runs on plain PostgreSQL and, where the extension is installed, on
TimescaleDB (skipped with the reason elsewhere). The broker a test restarts is
parametrized over Debian's Mosquitto and Mosquitto 2.1 with persist-sqlite, whose
install prefix `CITYVITALS_TEST_MOSQUITTO_21` names (`.ci/run` sets it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cityvitals.cli.localstack import (
    MosquittoServer,
    PostgresServer,
    free_port,
)
from cityvitals.db.migrate import run_migrations
from cityvitals.settings import MigrateSettings

TEMPLATE_DB = "cityvitals_template"
STORAGES = ("postgresql", "timescaledb")
BROKERS = ("mosquitto-2.0", "mosquitto-2.1")
MOSQUITTO_21_ENV = "CITYVITALS_TEST_MOSQUITTO_21"


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A folder for a server's data, removed with everything in it afterwards."""
    # Under /tmp, which every user can traverse: PostgreSQL runs as `postgres` for root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class PgAdmin:
    """Where test databases are made: a server URL with rights to CREATE DATABASE."""

    admin_url: str

    def url_for(self, database: str) -> str:
        """The URL of a database on this server."""
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = database
        return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]

    def uri_for(self, database: str) -> str:
        """The `postgresql://` URL of a database on this server."""
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        user = info.get("user", "postgres")
        password = info.get("password")
        auth = f"{user}:{password}@" if password else f"{user}@"
        host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
        return f"postgresql://{auth}{host}:{port}/{database}"

    def create(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally from a template) and return its URL."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            conn.execute(query)
        return self.uri_for(name)

    def seal_template(self, name: str) -> None:
        """Make a database a template nobody connects to, so copies never wait for it.

        TimescaleDB's background workers connect to every database of a server that
        preloads it, and CREATE DATABASE … TEMPLATE refuses a template in use.
        """
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    def drop(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[PgAdmin]:
    """The session's PostgreSQL server, started here unless the environment names one."""
    external = os.environ.get("CITYVITALS_TEST_DATABASE_URL")
    if external:
        yield PgAdmin(external)
        return
    with scratch_dir("cityvitals-pg-") as folder:
        server = PostgresServer(data_dir=folder / "data", port=free_port(), durable=False)
        server.init()
        server.start()
        try:
            yield PgAdmin(server.url_for("postgres"))
        finally:
            server.stop()


def server_has_timescale(admin: PgAdmin) -> bool:
    with psycopg.connect(admin.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb' "
            "AND current_setting('shared_preload_libraries') LIKE '%%timescaledb%%'"
        ).fetchone()
    return row is not None


@pytest.fixture(scope="session", params=STORAGES)
def storage(request: pytest.FixtureRequest, pg_admin: PgAdmin) -> str:
    """The storage path under test; TimescaleDB only where the server has it loaded."""
    value = str(request.param)
    if value == "timescaledb" and not server_has_timescale(pg_admin):
        pytest.skip(
            "TimescaleDB is not installed (or not preloaded on the server the suite "
            "uses): the TimescaleDB path is not tested here"
        )
    return value


def timescale_mode(storage: str) -> str:
    """CITYVITALS_TIMESCALE for a storage path."""
    return "on" if storage == "timescaledb" else "off"


@pytest.fixture(scope="session")
def template_db(pg_admin: PgAdmin, storage: str) -> str:
    """A migrated database of the storage path that each test's database is cloned from."""
    name = f"{TEMPLATE_DB}_{storage[:5]}_{uuid.uuid4().hex[:8]}"
    url = pg_admin.create(name)
    run_migrations(MigrateSettings(database_url=url, timescale=timescale_mode(storage)))
    pg_admin.seal_template(name)
    return name


@pytest.fixture
def database_url(pg_admin: PgAdmin, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test, on each storage path."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_admin.create(name, template=template_db)
    try:
        yield url
    finally:
        pg_admin.drop(name)


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """The session's Mosquitto broker, started here unless the environment names one."""
    external = os.environ.get("CITYVITALS_TEST_MQTT_URL")
    if external:
        yield external
        return
    with scratch_dir("cityvitals-mqtt-") as folder:
        broker = MosquittoServer(work_dir=folder, port=free_port())
        broker.start()
        try:
            yield broker.url
        finally:
            broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test publishes under."""
    return f"t{uuid.uuid4().hex[:10]}/city"


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of a test's own, for tests that stop and start it.

    It loads TimescaleDB when installed; `private_db` migrates it for the
    storage path under test.
    """
    with scratch_dir("cityvitals-pgp-") as folder:
        server = PostgresServer(data_dir=folder / "data", port=free_port(), durable=False)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()


def mosquitto_21_home() -> Path | None:
    """The install prefix of Mosquitto 2.1 with persist-sqlite, when the suite has one."""
    value = os.environ.get(MOSQUITTO_21_ENV)
    return Path(value) if value else None


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """Which Mosquitto a test that restarts its broker runs against."""
    value = str(request.param)
    if value == "mosquitto-2.1":
        home = mosquitto_21_home()
        if home is None or not (home / "sbin" / "mosquitto").exists():
            pytest.skip(
                f"Mosquitto 2.1 with persist-sqlite is not available ({MOSQUITTO_21_ENV} "
                "names its install prefix)"
            )
    return value


@pytest.fixture
def private_mosquitto(broker: str) -> Iterator[MosquittoServer]:
    """A broker of a test's own, for tests that restart or kill it; on each Mosquitto."""
    with scratch_dir("cityvitals-mqp-") as folder:
        broker_server = MosquittoServer(
            work_dir=folder,
            port=free_port(),
            home=mosquitto_21_home() if broker == "mosquitto-2.1" else None,
        )
        broker_server.start()
        try:
            yield broker_server
        finally:
            broker_server.stop()


@pytest.fixture
def private_db(private_postgres: PostgresServer, storage: str) -> tuple[PostgresServer, str]:
    """A test's own server with a database migrated for the storage path under test."""
    if storage == "timescaledb" and not private_postgres.timescale:
        pytest.skip("TimescaleDB is not installed: the TimescaleDB path is not tested here")
    url = private_postgres.url
    run_migrations(MigrateSettings(database_url=url, timescale=timescale_mode(storage)))
    return private_postgres, url
