"""Real PostgreSQL and Mosquitto servers run as child processes on loopback.

`make run`, the test harness and the benchmarks all start their servers through
this module, so that each of them runs the same real components. Nothing here is a
stand-in: the servers are the system's own binaries.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# PostgreSQL refuses to run as root; when we are root we run it as this user.
PG_SERVICE_USER = "postgres"
# Debian's broker: the embedded default of `make run` and the test suite.
DEBIAN_MOSQUITTO = Path("/usr/sbin/mosquitto")
# The persist-sqlite plugin of Mosquitto 2.1, relative to its install prefix: with it
# the broker keeps shared subscriptions across its own restart (docs/ingestion.md).
PERSIST_SQLITE_PLUGIN = "lib/mosquitto_persist_sqlite.so"


class StackError(RuntimeError):
    """A local server could not be started; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(
    port: int,
    deadline_s: float,
    host: str = "127.0.0.1",
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll until host:port accepts connections."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if port_in_use(port, host):
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"server on port {port} exited with code {proc.returncode}")
        time.sleep(0.05)
    raise StackError(f"nothing listens on {host}:{port} after {deadline_s:.0f} s")


def _find_pg_bindir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for c in candidates:
        if (c / "postgres").exists() and (c / "initdb").exists():
            return c
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise StackError(
        "no PostgreSQL server binaries found: install Debian's `postgresql` "
        "package (make run and make test do this when run as root)"
    )


def timescale_installed(bindir: Path | None = None) -> bool:
    """Whether the TimescaleDB extension is installed for these server binaries."""
    try:
        bindir = bindir or _find_pg_bindir()
    except StackError:
        return False
    major = bindir.parent.name
    return Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control").exists()


def _demote_user() -> str | None:
    """The user to run a server as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SERVICE_USER)
    except KeyError as err:
        raise StackError(
            f"running as root needs the `{PG_SERVICE_USER}` user, which Debian's "
            "postgresql package creates"
        ) from err
    return PG_SERVICE_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _check_reachable(path: Path, user: str) -> None:
    # Every parent must be searchable by the server's user.
    for parent in [*reversed(path.parents)]:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != pwd.getpwnam(user).pw_uid and not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by the `{user}` user that runs "
                f"PostgreSQL as root; move the data folder or run `chmod o+x "
                f"{parent}`"
            )


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in `data_dir`, served on a loopback port."""

    data_dir: Path
    port: int
    user: str = "cityvitals"
    database: str = "cityvitals"
    durable: bool = True
    log_file: Path | None = None
    # Load TimescaleDB at server start when it is installed (it must be preloaded to
    # be usable); False gives a server that has it installed but not preloaded.
    preload_timescale: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # The server runs with its own working directory: paths must be absolute.
        self.data_dir = self.data_dir.absolute()

    @property
    def timescale(self) -> bool:
        """Whether this server runs with TimescaleDB loaded."""
        return self.preload_timescale and timescale_installed()

    @property
    def url(self) -> str:
        """The `postgresql://` URL of the main database."""
        return f"postgresql://{self.user}:{self.user}@127.0.0.1:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://{self.user}:{self.user}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, str]:
        user = _demote_user()
        return {"user": user} if user else {}

    def init(self) -> bool:
        """Create the cluster if the folder holds none; say whether it was created."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        bindir = _find_pg_bindir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        owner = _demote_user()
        if owner:
            _check_reachable(self.data_dir, owner)
            _chown_tree(self.data_dir, owner)
        self.data_dir.chmod(0o700)
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            capture_output=True,
            check=False,
            **self._run_as(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        return True

    def start(self, deadline_s: float = 60.0) -> None:
        """Start the server and wait until it takes connections."""
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is already in use: set another PostgreSQL port")
        bindir = _find_pg_bindir()
        sock_dir = self.data_dir / "sock"
        sock_dir.mkdir(exist_ok=True)
        owner = _demote_user()
        if owner:
            _chown_tree(sock_dir, owner)
        args = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sock_dir}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "max_wal_size=2GB",
        ]
        if self.timescale:
            args += [
                "-c",
                "shared_preload_libraries=timescaledb",
                "-c",
                "timescaledb.telemetry_level=off",
            ]
        if not self.durable:
            # Test clusters trade crash safety for speed; they are thrown away anyway.
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._run_as(),
        )
        self._wait_ready(deadline_s)
        self._ensure_database()

    def _wait_ready(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(
                    f"postgres exited with code {self.proc.returncode}; "
                    f"see {self.log_file or 'its log'}"
                )
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as err:
                last = err
                time.sleep(0.1)
        raise StackError(f"PostgreSQL did not accept connections in {deadline_s:.0f} s: {last}")

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(
                        psycopg.sql.Identifier(self.database)
                    )
                )

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.url_for(name)

    def stop(self, deadline_s: float = 30.0) -> None:
        """Fast shutdown; kill if it does not stop in time."""
        _stop(self.proc, signal.SIGINT, deadline_s)
        self.proc = None


@dataclass
class MosquittoServer:
    """A Mosquitto broker with the project's queue settings on a loopback port.

    `home` is the install prefix of a Mosquitto 2.1 build (`sbin/mosquitto` and the
    persist-sqlite plugin under it); without it, Debian's broker runs with its own
    persistence file.
    """

    work_dir: Path
    port: int
    persistence: bool = True
    extra_config: str = ""
    log_file: Path | None = None
    home: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir.absolute()

    @property
    def url(self) -> str:
        """The `mqtt://` URL of the broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def binary(self) -> Path:
        """The broker executable."""
        if self.home is not None:
            return self.home / "sbin" / "mosquitto"
        found = shutil.which("mosquitto")
        return Path(found) if found else DEBIAN_MOSQUITTO

    def _persistence_lines(self) -> list[str]:
        if not self.persistence:
            return ["persistence false"]
        if self.home is not None:
            # 2.1 refuses `persistence true` beside a persistence plugin; the plugin
            # keeps its database in persistence_location and, with a flush period of
            # 0, commits every change at once (nothing is lost to a SIGKILL).
            return [
                f"persistence_location {self.work_dir}/",
                f"plugin {self.home / PERSIST_SQLITE_PLUGIN}",
                "plugin_opt_flush_period 0",
            ]
        return [
            "persistence true",
            f"persistence_location {self.work_dir}/",
            "autosave_interval 30",
        ]

    def config_text(self) -> str:
        """The broker configuration: the shipped queue limits on a loopback listener."""
        from cityvitals.brokerconf import queue_settings

        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            *self._persistence_lines(),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *queue_settings(),
        ]
        if os.geteuid() == 0:
            # Stay root: the broker's files live in a folder the test or `make run` owns.
            lines.append("user root")
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self, deadline_s: float = 30.0) -> None:
        """Write the config, start the broker and wait for its port."""
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is already in use: set another MQTT port")
        binary = self.binary
        if not binary.exists():
            raise StackError(
                f"no mosquitto binary at {binary}: install Debian's `mosquitto` package "
                "(make run and make test do this when run as root)"
            )
        if self.home is not None and not (self.home / PERSIST_SQLITE_PLUGIN).exists():
            raise StackError(f"no persist-sqlite plugin under {self.home}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(binary), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, deadline_s, proc=self.proc)

    def stop(self, deadline_s: float = 30.0) -> None:
        """Stop the broker; it saves its persistence file on the way out."""
        _stop(self.proc, signal.SIGTERM, deadline_s)
        self.proc = None

    def kill(self) -> None:
        """Kill the broker without letting it save anything."""
        _stop(self.proc, signal.SIGKILL, 10)
        self.proc = None


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, deadline_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
