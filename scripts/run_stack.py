"""`make run`: the whole pipeline locally, in the foreground, until Ctrl-C.

PostgreSQL and Mosquitto run from the system's binaries with their data in `.run/`
(gitignored), so a second run finds its data again. Then migrations, the collector,
the API and a small simulated fleet start as `cityvitals` subcommands, exactly as
a deployment starts them (docs/running.md).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.text import Text

from cityvitals.cli.localstack import (
    PG_SERVICE_USER,
    MosquittoServer,
    PostgresServer,
    StackError,
    port_in_use,
)

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
CITYVITALS = str(Path(sys.executable).parent / "cityvitals")
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _report(message: str) -> None:
    """The one line a failed `make run` ends with (never wrapped, never markup)."""
    errors.print(Text.assemble(("error: ", "bold red"), _one_line(message)), soft_wrap=True)


def _error_line(output: str) -> str:
    """The one-line start-up error a `cityvitals` subcommand ended with, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("cityvitals ") and ": error: " in line:
            return line
    return lines[-1] if lines else "no output"


def _log_tail(name: str) -> str:
    path = RUN / "logs" / f"{name}.log"
    try:
        return _error_line(path.read_text(errors="replace")[-20000:])
    except OSError:
        return "no log"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None


def _reachable_by(user: str, path: Path) -> bool:
    uid = pwd.getpwnam(user).pw_uid
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return False
    return True


def _pg_data_dir() -> Path:
    """`.run/pgdata`, unless we are root and the `postgres` user cannot reach it."""
    wanted = RUN / "pgdata"
    if os.geteuid() != 0 or _reachable_by(PG_SERVICE_USER, RUN):
        return wanted
    # PostgreSQL refuses to run as root, and its user cannot enter this checkout: keep
    # the cluster in a folder of its own, named after the checkout so it is found again.
    tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]  # noqa: S324
    return Path("/var/lib/cityvitals") / tag / "pgdata"


def _admin_token() -> str:
    token_file = RUN / "admin-token"
    if env := os.environ.get("CITYVITALS_ADMIN_TOKEN"):
        return env
    if token_file.exists():
        return token_file.read_text().strip()
    token = secrets.token_urlsafe(24)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token


def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes], name: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise StackError(
                f"{url} never came up: {name} exited with {proc.returncode} "
                f"({_log_tail(name)}); see {RUN / 'logs' / (name + '.log')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise StackError(f"{url} did not answer 200 within {deadline_s:.0f} s")


class Stack:
    """The processes of the local stack, stopped in reverse order."""

    def __init__(self) -> None:
        RUN.mkdir(exist_ok=True)
        (RUN / "logs").mkdir(exist_ok=True)
        self.pg_port = _port("CITYVITALS_RUN_PG_PORT", 54320)
        self.mqtt_port = _port("CITYVITALS_RUN_MQTT_PORT", 18830)
        self.api_port = _port("CITYVITALS_API_PORT", 8080)
        self.metrics_port = _port("CITYVITALS_METRICS_PORT", 9464)
        self.pg = PostgresServer(
            data_dir=_pg_data_dir(), port=self.pg_port, log_file=RUN / "logs" / "postgres.log"
        )
        self.broker = MosquittoServer(
            work_dir=RUN / "mosquitto", port=self.mqtt_port, log_file=RUN / "logs" / "mosquitto.log"
        )
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_RUN_")},
            "CITYVITALS_DATABASE_URL": self.pg.url,
            "CITYVITALS_MQTT_URL": self.broker.url,
            "CITYVITALS_API_PORT": str(self.api_port),
            "CITYVITALS_METRICS_PORT": str(self.metrics_port),
            "CITYVITALS_ADMIN_TOKEN": _admin_token(),
            "CITYVITALS_API_URL": f"http://127.0.0.1:{self.api_port}",
            "CITYVITALS_CLIENT_ID": "cityvitals-collector-local",
        }

    def check_ports(self) -> None:
        """Refuse to start with a clear message when a port is taken."""
        for name, port, var in (
            ("PostgreSQL", self.pg_port, "CITYVITALS_RUN_PG_PORT"),
            ("Mosquitto", self.mqtt_port, "CITYVITALS_RUN_MQTT_PORT"),
            ("API", self.api_port, "CITYVITALS_API_PORT"),
            ("collector metrics", self.metrics_port, "CITYVITALS_METRICS_PORT"),
        ):
            if port_in_use(port):
                raise StackError(
                    f"port {port} for {name} is already in use: is another "
                    f"`make run` running? Choose another with {var}=<port>."
                )

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a `cityvitals` subcommand with its output in .run/logs/<name>.log."""
        log = (RUN / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [CITYVITALS, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def start(self) -> None:
        """Bring every part up, in dependency order."""
        self.check_ports()
        created = self.pg.init()
        console.print(
            f"[bold]PostgreSQL[/] {'created' if created else 'found'} cluster in {self.pg.data_dir}"
        )
        self.pg.start()
        self.broker.start()
        console.print(
            f"[bold]Mosquitto[/] on 127.0.0.1:{self.mqtt_port} (data in {self.broker.work_dir})"
        )
        migrate = subprocess.run(
            [CITYVITALS, "migrate"], env=self.env, capture_output=True, check=False
        )
        if migrate.returncode != 0:
            raise StackError(
                "migrations failed: " + _error_line(migrate.stderr.decode(errors="replace"))
            )
        console.print(f"[bold]Database[/] {migrate.stdout.decode().strip()}")
        self.spawn("collector", "collector")
        api = self.spawn("api", "api")
        _wait_http(f"http://127.0.0.1:{self.api_port}/readyz", 60, api, "api")
        self.spawn("simulator", "simulate", "--register", "api")
        base = f"http://127.0.0.1:{self.api_port}"
        console.print()
        console.print("[bold green]City Vitals is running[/]  (Ctrl-C stops everything)")
        console.print(f"  screen    {base}/")
        console.print(f"  API       {base}/v1/vitals")
        console.print(f"  API docs  {base}/docs")
        console.print(
            f"  metrics   {base}/metrics  and  "
            f"http://127.0.0.1:{self.metrics_port}/metrics (collector)"
        )
        console.print(f"  MQTT      {self.broker.url}   database  {self.pg.url}")
        console.print(f"  admin token in {RUN / 'admin-token'}; logs in {RUN / 'logs'}")

    def watch(self) -> None:
        """Wait for Ctrl-C; report a part that dies."""
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with code {proc.returncode} ({_log_tail(name)}); see "
                        f"{RUN / 'logs' / (name + '.log')}"
                    )
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop everything that was started, newest first."""
        # A second Ctrl-C must not interrupt the shutdown and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.broker.stop()
        self.pg.stop()
        console.print("stopped; data kept in .run/ (make clean removes it)")


def main() -> int:
    """Run the stack until interrupted; one line and exit code 1 when it cannot."""
    try:
        stack = Stack()
    except (StackError, OSError, KeyError) as err:
        _report(_failure(err))
        return 1

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        stack.start()
        stack.watch()
    except KeyboardInterrupt:
        console.print("\nstopping …")
    except (StackError, OSError) as err:
        _report(_failure(err))
        stack.stop()
        return 1
    stack.stop()
    return 0


def _failure(err: BaseException) -> str:
    """What went wrong and what to do, for the errors start-up can meet."""
    if isinstance(err, StackError):
        return str(err)
    if isinstance(err, FileNotFoundError) and err.filename == CITYVITALS:
        return f"{CITYVITALS} is missing: run `make install` first"
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror or err}{where}: check the permissions of {RUN} and the binaries"
    # pwd.getpwnam: running as root needs the `postgres` user.
    return (
        f"no {PG_SERVICE_USER!r} user on this machine: install Debian's `postgresql` package "
        f"or run make run as a normal user ({err})"
    )


if __name__ == "__main__":
    sys.exit(main())
