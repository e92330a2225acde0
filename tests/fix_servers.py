"""Fixtures for the real servers: PostgreSQL and Mosquitto."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cityvitals.cli.localstack import MosquittoServer, PostgresServer, free_port
from cityvitals.db.migrate import run_migrations
from cityvitals.settings import MigrateSettings

TEMPLATE_DB = "cityvitals_template"


def _scratch_dir(prefix: str) -> Path:
    # Under /tmp, which every user can traverse: PostgreSQL runs as `postgres` for root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


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
    server = PostgresServer(
        data_dir=_scratch_dir("cityvitals-pg-") / "data", port=free_port(), durable=False
    )
    server.init()
    server.start()
    try:
        yield PgAdmin(server.url_for("postgres"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_admin: PgAdmin) -> str:
    """A migrated database that each test's database is cloned from."""
    name = f"{TEMPLATE_DB}_{uuid.uuid4().hex[:8]}"
    url = pg_admin.create(name)
    run_migrations(MigrateSettings(database_url=url))
    return name


@pytest.fixture
def database_url(pg_admin: PgAdmin, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
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
    broker = MosquittoServer(work_dir=_scratch_dir("cityvitals-mqtt-"), port=free_port())
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
    """A PostgreSQL server of a test's own, for tests that stop and start it."""
    server = PostgresServer(
        data_dir=_scratch_dir("cityvitals-pgp-") / "data", port=free_port(), durable=False
    )
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_mosquitto() -> Iterator[MosquittoServer]:
    """A broker of a test's own, for tests that restart or kill it."""
    broker = MosquittoServer(work_dir=_scratch_dir("cityvitals-mqp-"), port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
