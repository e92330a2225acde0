"""`make bench` / `make bench-quick`: the speed targets of docs/targets.md, measured side by side.

Every benchmark runs against a real PostgreSQL (durable: fsync and synchronous commit
on, as in production) and a real Mosquitto with the project's configuration, started
for the purpose on free loopback ports. Each figure is the median of several runs;
ratios compare runs made in the same invocation. Results go to docs/benchmarks.md
(the full run) or bench-results/quick.md (the smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cityvitals.catalogue import CATALOGUE, DISTRICTS
from cityvitals.cli.localstack import MosquittoServer, PostgresServer, free_port
from cityvitals.db.migrate import run_migrations
from cityvitals.db.schema import CHANGE_LOGGED
from cityvitals.settings import MigrateSettings
from cityvitals.simulator.load import publish_load
from scripts import make_registry_csv as registry_csv

ROOT = Path(__file__).resolve().parent.parent
CITYVITALS = str(Path(sys.executable).parent / "cityvitals")
BENCH_TOKEN = "bench-only-token"  # noqa: S105 - a throwaway API started for the run


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is."""

    runs: int
    ingest_messages: int
    ingest_devices: int
    naive_messages: int
    burst_messages: int
    fleet_devices: int
    history_days: tuple[int, ...]
    history_meters: int
    http_clients: int
    http_seconds: int
    visible_samples: int
    quiet_seconds: int
    # Messages queued for each drain of the write section (scripts/bench_write.py).
    drain_messages: int
    # The megacity's meters reporting at :00, one reading each (scripts/bench_write.py).
    meter_burst: int


FULL = Sizes(
    runs=3,
    ingest_messages=200_000,
    ingest_devices=20_000,
    naive_messages=20_000,
    burst_messages=100_000,
    fleet_devices=200_000,
    history_days=(1, 30),
    history_meters=50,
    http_clients=200,
    http_seconds=15,
    visible_samples=10,
    quiet_seconds=60,
    drain_messages=100_000,
    meter_burst=700_000,
)
QUICK = Sizes(
    runs=1,
    ingest_messages=20_000,
    ingest_devices=2_000,
    naive_messages=2_000,
    burst_messages=10_000,
    fleet_devices=5_000,
    history_days=(1,),
    history_meters=50,
    http_clients=20,
    http_seconds=3,
    visible_samples=5,
    quiet_seconds=5,
    drain_messages=5_000,
    meter_burst=5_000,
)


@dataclass
class Report:
    """Rows of the results table, in order."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, result: str, target: str = "") -> None:
        """Add a row and say it on the terminal."""
        self.rows.append((what, result, target))
        print(f"  {what}: {result}  {target}", flush=True)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        out: dict[str, float] = {}
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def _wait(check: Callable[[], bool], deadline_s: float, what: str, every: float = 0.1) -> float:
    """Poll until `check` holds; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    raise RuntimeError(f"timed out after {deadline_s:.0f} s waiting for {what}")


class Bench:
    """One benchmark session: servers, helpers and the report."""

    def __init__(self, sizes: Sizes, work: Path) -> None:
        self.sizes = sizes
        self.work = work
        self.pg = PostgresServer(
            work / "pg", free_port(), durable=True, log_file=work / "postgres.log"
        )
        self.broker = MosquittoServer(work / "mqtt", free_port(), log_file=work / "mqtt.log")
        self.report = Report()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.n_db = 0

    @contextlib.contextmanager
    def servers(self) -> Iterator[None]:
        """Start PostgreSQL and Mosquitto for the session."""
        self.pg.init()
        self.pg.start()
        self.broker.start()
        try:
            yield
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            self.broker.stop()
            self.pg.stop()

    def fresh_db(self) -> str:
        """A new migrated database."""
        self.n_db += 1
        name = f"bench{self.n_db}"
        url = self.pg.create_database(name)
        run_migrations(MigrateSettings(database_url=url))
        return url

    def env(self, db: str, prefix: str, **extra: str) -> dict[str, str]:
        """Environment for a service under test."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")}
        env.update(
            {
                "CITYVITALS_DATABASE_URL": db,
                "CITYVITALS_MQTT_URL": self.broker.url,
                "CITYVITALS_TOPIC_PREFIX": prefix,
                "CITYVITALS_LOG_FORMAT": "json",
                "CITYVITALS_LOG_LEVEL": "WARNING",
            }
        )
        env.update({f"CITYVITALS_{k.upper()}": v for k, v in extra.items()})
        return env

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        """Start a process with its output in the work folder."""
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def collector(
        self, db: str, prefix: str, client_id: str, **extra: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Start a collector and wait until it is subscribed."""
        # The benchmark's broker never restarts, so the collectors share on it whatever
        # its version (`auto` would not share on Debian's 2.0, and two collectors would
        # each store everything).
        extra.setdefault("shared_subscription", "on")
        port = free_port()
        env = self.env(db, prefix, client_id=client_id, metrics_port=str(port), **extra)
        proc = self.spawn([CITYVITALS, "collector"], env, client_id)
        _wait(
            lambda: _ok(lambda: _scrape(port).get("cityvitals_collector_mqtt_connected") == 1.0),
            60,
            "collector subscribed",
        )
        return proc, port

    def naive(self, db: str, prefix: str) -> subprocess.Popen[bytes]:
        """Start the baseline collector."""
        env = self.env(db, prefix, client_id=f"naive-{prefix}")
        log = self.work / f"naive-{prefix}.log"
        proc = self.spawn(
            [sys.executable, str(ROOT / "scripts" / "naive_collector.py")], env, f"naive-{prefix}"
        )
        _wait(lambda: log.exists() and "subscribed" in log.read_text(), 60, "naive subscribed")
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM and wait."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _ok(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:
        return False


def _at_least(db: str, n: int) -> Callable[[], bool]:
    return lambda: _count(db) >= n


def _changed(port: int, before: float) -> Callable[[], bool]:
    return lambda: _free_spaces(port) != before


def _count(db: str, table: str = "readings_energy") -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


# --- parse --------------------------------------------------------------------------


def bench_parse(b: Bench) -> None:
    """msgspec (what the collector uses) against the same models in pydantic v2."""
    from typing import Annotated, Literal

    import msgspec
    from pydantic import BaseModel, Field

    from cityvitals.payloads import EnergyPayload, Limits, WastePayload, parse_message

    class PBin(BaseModel):
        category: Literal["wet", "dry", "recyclable", "hazardous"]
        fill_pct: Annotated[float, Field(ge=0, le=100)]
        weight_kg: Annotated[float, Field(ge=0, le=2000)] | None = None

    class PWaste(BaseModel):
        bins: Annotated[list[PBin], Field(min_length=1, max_length=8)]
        ts: int | str | None = None
        temp_c: Annotated[float, Field(ge=-40, le=150)] | None = None
        battery_v: float | None = None
        seq: int | None = None

    class PEnergy(BaseModel):
        active_power_kw: Annotated[float, Field(ge=-100000, le=100000)]
        ts: int | str | None = None
        energy_kwh: Annotated[float, Field(ge=0)] | None = None
        voltage_v: Annotated[float, Field(ge=0, le=1000)] | None = None
        power_factor: Annotated[float, Field(ge=0, le=1)] | None = None
        seq: int | None = None

    now = datetime.now(UTC)
    energy = json.dumps(
        {
            "ts": now.isoformat(),
            "active_power_kw": 182.4,
            "energy_kwh": 12033.2,
            "voltage_v": 229.8,
            "power_factor": 0.94,
            "seq": 5521,
        }
    ).encode()
    waste = json.dumps(
        {
            "ts": int(now.timestamp() * 1000),
            "bins": [
                {"category": "wet", "fill_pct": 72.5, "weight_kg": 38.2},
                {"category": "dry", "fill_pct": 40.0},
            ],
            "temp_c": 24.5,
            "seq": 88,
        }
    ).encode()
    n = 20_000
    limits = Limits()
    dec_e = msgspec.json.Decoder(EnergyPayload)
    dec_w = msgspec.json.Decoder(WastePayload)
    full: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n // 2):
            parse_message("city/energy/em-1/telemetry", energy, now, prefix="city", limits=limits)
            parse_message("city/waste/ws-1/telemetry", waste, now, prefix="city", limits=limits)
        full.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(n // 2):
            dec_e.decode(energy)
            dec_w.decode(waste)
        ours.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(n // 2):
            PEnergy.model_validate_json(energy)
            PWaste.model_validate_json(waste)
        theirs.append((time.perf_counter() - t) / n * 1e6)
    f, o, p = _median(full), _median(ours), _median(theirs)
    b.report.add(
        "parse, whole path (topic, payload, ranges, timestamp, limits)",
        f"{f:.1f} µs/msg ({1e6 / f:,.0f} msg/s on one core)",
    )
    b.report.add(
        "payload models only: msgspec (ours) vs pydantic v2, same fields and ranges",
        f"{o:.2f} µs vs {p:.2f} µs per message",
        f"msgspec {p / o:.1f}x faster",
    )


# --- ingest -------------------------------------------------------------------------


# The change log's triggers (see cityvitals.changes), off to measure what they cost.
LOGGED = (*CHANGE_LOGGED, "events")


def _ingest_once(
    b: Bench,
    collectors: int,
    messages: int,
    devices: int,
    tag: str,
    *,
    change_log: bool = True,
) -> tuple[float, int, int, list[float]]:
    """Collectors running, a load published flat out; seconds until all are stored."""
    db = b.fresh_db()
    if not change_log:
        with psycopg.connect(db, autocommit=True) as conn:
            for table in LOGGED:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    prefix = f"b{tag}"
    procs = [b.collector(db, prefix, f"c-{tag}-{i}") for i in range(collectors)]
    start = time.monotonic()
    load = publish_load(b.broker.url, prefix, devices=devices, messages=messages, processes=2)
    _wait(lambda: _count(db) >= messages, 600, f"{messages} stored", every=0.05)
    seconds = time.monotonic() - start
    stored = _count(db)
    rss = [_rss_mb(p.pid) for p, _ in procs]
    for p, _ in procs:
        b.stop(p)
    return seconds, load.lost + (messages - stored), stored, rss


def bench_ingest(b: Bench) -> None:
    """Sustained QoS 1 ingest: one collector, two collectors, and the naive baseline."""
    s = b.sizes
    one: list[float] = []
    unlogged: list[float] = []
    two: list[float] = []
    naive: list[float] = []
    lost = 0
    for run in range(s.runs):
        secs, lost1, _, _ = _ingest_once(b, 1, s.ingest_messages, s.ingest_devices, f"1x{run}")
        one.append(s.ingest_messages / secs)
        secs, lost0, _, _ = _ingest_once(
            b, 1, s.ingest_messages, s.ingest_devices, f"1u{run}", change_log=False
        )
        unlogged.append(s.ingest_messages / secs)
        lost += lost0
        secs, lost2, _, _ = _ingest_once(b, 2, s.ingest_messages, s.ingest_devices, f"2x{run}")
        two.append(s.ingest_messages / secs)
        lost += lost1 + lost2
        db = b.fresh_db()
        prefix = f"bn{run}"
        proc = b.naive(db, prefix)
        start = time.monotonic()
        publish_load(
            b.broker.url, prefix, devices=s.ingest_devices, messages=s.naive_messages, processes=1
        )
        _wait(_at_least(db, s.naive_messages), 900, "naive stored", every=0.05)
        naive.append(s.naive_messages / (time.monotonic() - start))
        b.stop(proc)
        print(
            f"    run {run + 1}: one {one[-1]:,.0f}/s, two {two[-1]:,.0f}/s, "
            f"naive {naive[-1]:,.0f}/s",
            flush=True,
        )
    b.report.add(
        f"ingest, QoS 1, 1 collector ({s.ingest_messages:,} msgs, {s.ingest_devices:,} devices)",
        f"{_median(one):,.0f} msg/s, lost {lost}",
        "target ≥ 20,000 msg/s, 0 lost",
    )
    b.report.add(
        "  same, the change-log triggers off (the write path before the in-memory city state)",
        f"{_median(unlogged):,.0f} msg/s",
        f"with them: {_median(one) / _median(unlogged):.2f}x",
    )
    b.report.add(
        "ingest, QoS 1, 2 collectors on the shared subscription",
        f"{_median(two):,.0f} msg/s ({_median(two) / _median(one):.2f}x one)",
    )
    b.report.add(
        f"naive baseline: INSERT per message, ack on receipt ({s.naive_messages:,})",
        f"{_median(naive):,.0f} msg/s",
        f"ours is {_median(one) / _median(naive):.0f}x the baseline",
    )


def bench_drain(b: Bench) -> None:
    """A backlog queued while the collector was away, then drained with the generator idle.

    This is the collector's own capacity on this machine: nothing else competes for
    the two cores while it drains.
    """
    s = b.sizes
    rates: list[float] = []
    lost = 0
    for run in range(s.runs):
        db = b.fresh_db()
        prefix = f"bd{run}"
        proc, _ = b.collector(db, prefix, f"drain-{run}")
        b.stop(proc)  # the persistent session stays; the broker queues for it
        load = publish_load(
            b.broker.url, prefix, devices=s.ingest_devices, messages=s.ingest_messages, processes=2
        )
        start = time.monotonic()
        proc, _ = b.collector(db, prefix, f"drain-{run}")
        _wait(_at_least(db, s.ingest_messages), 600, "backlog drained", every=0.05)
        rates.append(s.ingest_messages / (time.monotonic() - start))
        lost += load.lost + s.ingest_messages - _count(db)
        b.stop(proc)
    b.report.add(
        f"drain: {s.ingest_messages:,} queued while the collector was away, "
        "1 collector, generator idle",
        f"{_median(rates):,.0f} msg/s, lost {lost}",
    )


def bench_burst(b: Bench) -> None:
    """100,000 meter readings published as fast as possible: time until all stored."""
    s = b.sizes
    times: list[float] = []
    publish: list[float] = []
    lost_total = 0
    for run in range(s.runs):
        db = b.fresh_db()
        prefix = f"bb{run}"
        proc, _ = b.collector(db, prefix, f"burst-{run}")
        start = time.monotonic()
        load = publish_load(
            b.broker.url, prefix, devices=s.burst_messages, messages=s.burst_messages, processes=3
        )
        publish.append(load.seconds)
        _wait(_at_least(db, s.burst_messages), 600, "burst stored", every=0.05)
        times.append(time.monotonic() - start)
        lost_total += load.lost + s.burst_messages - _count(db)
        b.stop(proc)
    b.report.add(
        f"burst: {s.burst_messages:,} meter readings (one per meter) published in "
        f"{_median(publish):.1f} s",
        f"all stored after {_median(times):.1f} s, lost {lost_total}",
        "target: all stored, 0 lost",
    )


# --- API ----------------------------------------------------------------------------


def _register_fleet(b: Bench, db: str, devices: int) -> list[str]:
    """Register `devices` devices with `cityvitals devices import` of a CSV in the city's
    mix (60 % parking, 5 % huts, 35 % meters); report the import's time and memory."""
    path = b.work / f"registry-{devices}.csv"
    ids: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(registry_csv.HEADER)
        for kind, row in registry_csv._rows(devices, random.Random(1)):  # noqa: S311
            if kind == "energy":
                # The load generator's meters draw 50-5,000 kW: with 4,000 kW each, a
                # few per cent of the 4-meter buildings run near or over their contract
                # (alerts to evaluate), not every one of them.
                row[8] = "4000"
            writer.writerow(row)
            ids.append(row[0])
    proc = b.spawn([CITYVITALS, "devices", "import", str(path)], b.env(db, "reg"), "import")
    start = time.monotonic()
    peak = _peak_rss_mb(proc)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({proc.returncode}): see {b.work / 'import.log'}")
    b.report.add(
        f"`cityvitals devices import` of {devices:,} devices "
        f"({path.stat().st_size / 2**20:.0f} MB CSV)",
        f"{seconds:.1f} s, peak RSS {peak:.0f} MB",
        "target ≤ 60 s at ≤ 300 MB (2,000,000)",
    )
    return ids


def _peak_rss_mb(proc: subprocess.Popen[bytes], every: float = 0.05) -> float:
    """Wait for `proc`, sampling its resident memory; the largest sample in MB."""
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            peak = max(peak, _rss_mb(proc.pid))
        time.sleep(every)
    return peak


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (from /proc, like `time`)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _postgres_pids(b: Bench) -> list[int]:
    """The postmaster and every process it started (backends, workers)."""
    found = list((b.work / "pg").rglob("postmaster.pid"))
    if not found:
        return []
    master = int(found[0].read_text().split()[0])
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
    return pids


def _history(db: str, days: int, meters: int) -> int:
    """`days` of history: raw readings of `meters` meters every minute, and the daily,
    hourly and per-minute aggregates of the whole fleet for those days, written by SQL.
    """
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO readings_energy (device_id, ts, received_at, active_power_kw, "
            "energy_kwh) SELECT 'hist-' || m, t, t, 100, 1000 + extract(epoch FROM t) / 3600 "
            "FROM generate_series(1, %s) m, generate_series(now() - make_interval(days => %s), "
            "now() - interval '1 hour', interval '1 minute') t ON CONFLICT DO NOTHING",
            (meters, days),
        )
        conn.execute(
            "INSERT INTO energy_daily (device_id, day, consumption_kwh, last_ts) "
            "SELECT d.device_id, (now() - make_interval(days => g))::date, 100, "
            "now() - make_interval(days => g) FROM devices d, generate_series(1, %s) g "
            "WHERE d.kind = 'energy' ON CONFLICT DO NOTHING",
            (days,),
        )
        conn.execute(
            "INSERT INTO parking_hourly (device_id, hour, transitions) "
            "SELECT d.device_id, date_trunc('hour', now()) - make_interval(hours => g), 1 "
            "FROM (SELECT device_id FROM devices WHERE kind = 'parking' LIMIT 2000) d, "
            "generate_series(25, 24 * %s) g ON CONFLICT DO NOTHING",
            (days,),
        )
        conn.execute(
            "INSERT INTO indicator_samples (indicator, scope, ts, value) "
            "SELECT i, s, date_trunc('minute', now()) - make_interval(mins => g), 1 "
            "FROM unnest(%s::text[]) i, unnest(%s::text[]) s, "
            "generate_series(15, 1440 * %s, 15) g "
            "ON CONFLICT DO NOTHING",
            ([ind.id for ind in CATALOGUE], ["city", *[d.id for d in DISTRICTS]], days),
        )
        conn.execute("ANALYZE")
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings_energy) + (SELECT count(*) FROM "
            "energy_daily) + (SELECT count(*) FROM parking_hourly) + (SELECT count(*) FROM "
            "indicator_samples)"
        ).fetchone()
    return int(row[0]) if row else 0


def _wrk(url: str, clients: int, seconds: int) -> dict[str, float]:
    """p50/p99 latency and rate from wrk (Debian's), which is not the limit here."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            "Accept-Encoding: gzip",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    res: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            res[parts[0]] = _ms(parts[1])
        if line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        if "Non-2xx" in line:
            res["non2xx"] = float(parts[-1])
    return res


def _poll(url: str, clients: int, seconds: int, every_s: float = 1.0) -> dict[str, float]:
    """Screens as they really poll: each client asks once per `every_s` (open loop) on its
    own keep-alive connection, with `If-None-Match` like the shipped screen; latency per
    request, p50 and p99 in ms.

    The clients speak HTTP/1.1 over plain asyncio streams: a full client library costs
    about a millisecond of CPU per request, and 200 of them on the cores the server uses
    would measure the client's queue rather than the server.
    """
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"

    async def ask(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, etag: str
    ) -> tuple[int, str]:
        inm = f"If-None-Match: {etag}\r\n" if etag else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: gzip\r\n"
            f"{inm}\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        return int(head[0].split()[1]), headers.get("etag", etag)

    async def screen(offset: float, end: float, lat: list[float], codes: list[int]) -> None:
        await asyncio.sleep(offset)
        etag = ""
        nxt = time.monotonic()
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while nxt < end:
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                code, etag = await ask(*conn, etag)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                codes.append(0)  # counted as an error; the screen would retry
                conn = None
            else:
                lat.append((time.perf_counter() - t) * 1000)
                codes.append(code)
            nxt += every_s
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        if conn is not None:
            conn[1].close()

    async def main() -> tuple[list[float], list[int]]:
        lat: list[float] = []
        codes: list[int] = []
        end = time.monotonic() + seconds
        await asyncio.gather(
            *(screen(every_s * i / clients, end, lat, codes) for i in range(clients))
        )
        return lat, codes

    lat, codes = asyncio.run(main())
    lat.sort()
    bad = sum(1 for c in codes if c not in (200, 304))
    return {
        "50%": lat[len(lat) // 2],
        "99%": lat[int(len(lat) * 0.99) - 1],
        "n": float(len(lat)),
        "bad": float(bad),
    }


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _api(
    b: Bench, db: str, prefix: str, ready_s: float = 60
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = b.env(db, prefix, api_port=str(port), admin_token=BENCH_TOKEN)
    proc = b.spawn([CITYVITALS, "api"], env, f"api-{port}")
    _wait(
        lambda: _ok(lambda: _http_status(f"http://127.0.0.1:{port}/readyz") == 200),
        ready_s,
        "API ready",
        every=0.05,
    )
    return proc, port


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _vitals(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/vitals", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def bench_api(b: Bench) -> None:
    """The vital signs of a registered city: import, fill, the API's first load, a quiet
    city's cost, /v1/vitals under 200 polling screens, publish → visible."""
    s = b.sizes
    db = b.fresh_db()
    prefix = "bapi"
    ids = _register_fleet(b, db, s.fleet_devices)
    proc, _ = b.collector(db, prefix, "api-fill")
    by_kind: dict[str, list[str]] = {}
    for dev in ids:
        by_kind.setdefault(dev.split("-", 1)[0], []).append(dev)
    kinds = {"pk": "parking", "ws": "waste", "em": "energy"}
    start = time.monotonic()
    for short, devs in by_kind.items():
        # At a pace one collector keeps up with: a backlog of a million messages at
        # the broker is the drain benchmark's subject, not this one's.
        publish_load(
            b.broker.url,
            prefix,
            devices=devs,
            messages=len(devs),
            rate=FILL_RATE,
            processes=2,
            kind=kinds.get(short, "energy"),
        )
    _wait(
        lambda: sum(_count(db, f"latest_{k}") for k in ("parking", "waste", "energy")) >= len(ids),
        3600,
        "every device has a latest state",
        every=0.5,
    )
    fill = time.monotonic() - start
    rss = _rss_mb(proc.pid)
    b.report.add(
        f"every device heard once: {len(ids):,} readings published and stored",
        f"{fill:.0f} s ({len(ids) / fill:,.0f} msg/s)",
    )
    b.report.add(
        f"collector RSS after {len(ids):,} distinct devices", f"{rss:.0f} MB", "target ≤ 300 MB"
    )
    start = time.monotonic()
    api, port = _api(b, db, prefix, ready_s=1800)
    # Ready is "the database answers"; the first snapshot with the city's data is the
    # first refresh that completed.
    _wait(
        lambda: _ok(
            lambda: _scrape(port).get("cityvitals_snapshot_refresh_duration_seconds_count", 0) >= 1
        ),
        1800,
        "the first snapshot",
        every=0.1,
    )
    b.report.add(
        f"API start: the city state of {len(ids):,} devices loaded, first snapshot served",
        f"{time.monotonic() - start:.1f} s, API RSS {_rss_mb(api.pid):.0f} MB",
    )
    # A quiet city: nothing arrives; the API and PostgreSQL should have nothing to do
    # but the per-second refresh of an unchanged state and the slow figures.
    time.sleep(5)
    before = _scrape(port)
    pids = [api.pid, *_postgres_pids(b)]
    cpu0, t0 = _cpu_s(pids), time.monotonic()
    time.sleep(s.quiet_seconds)
    cpu1, t1 = _cpu_s(pids), time.monotonic()
    after = _scrape(port)
    n = after.get("cityvitals_snapshot_refresh_duration_seconds_count", 0.0) - before.get(
        "cityvitals_snapshot_refresh_duration_seconds_count", 0.0
    )
    total = after.get("cityvitals_snapshot_refresh_duration_seconds_sum", 0.0) - before.get(
        "cityvitals_snapshot_refresh_duration_seconds_sum", 0.0
    )
    b.report.add(
        f"quiet city, {len(ids):,} devices: CPU of API + PostgreSQL over {t1 - t0:.0f} s",
        f"{(cpu1 - cpu0) / (t1 - t0):.3f} cores",
        "target ≤ 0.1 core",
    )
    if n:
        b.report.add("  snapshot refresh time, quiet (mean)", f"{total / n * 1000:.1f} ms")
    url = f"http://127.0.0.1:{port}/v1/vitals"
    previous_days = 0
    for days in s.history_days:
        rows = _history(db, days, s.history_meters) if days > previous_days else 0
        previous_days = days
        time.sleep(2)  # one snapshot refresh after the history changed
        p50: list[float] = []
        p99: list[float] = []
        bad = 0.0
        before = _scrape(port)
        for _ in range(s.runs):
            r = _poll(url, s.http_clients, s.http_seconds)
            p50.append(r["50%"])
            p99.append(r["99%"])
            bad += r["bad"]
        b.report.add(
            f"GET /v1/vitals, {s.http_clients} screens polling every second, "
            f"{len(ids):,} devices, {days} day(s) of history ({rows:,} history rows)",
            f"p50 {_median(p50):.1f} ms, p99 {_median(p99):.1f} ms, {bad:.0f} errors",
            "target p99 ≤ 20 ms",
        )
        sat = _wrk(url, s.http_clients, s.http_seconds)
        b.report.add(
            f"  same, saturated: wrk, {s.http_clients} connections flat out",
            f"{sat.get('rps', 0):,.0f} req/s, p50 {sat.get('50%', 0):.0f} ms, "
            f"p99 {sat.get('99%', 0):.0f} ms",
        )
        with contextlib.suppress(OSError):
            m = _scrape(port)
            key = "cityvitals_snapshot_refresh_duration_seconds"
            n = m.get(f"{key}_count", 0.0) - before.get(f"{key}_count", 0.0)
            total = m.get(f"{key}_sum", 0.0) - before.get(f"{key}_sum", 0.0)
            if n:
                b.report.add(
                    "  snapshot refresh time while screens poll (mean)",
                    f"{total / n * 1000:.1f} ms",
                )
    # Publish -> visible: toggle one sensor's occupancy and watch its district's figure.
    dev = by_kind["pk"][0]
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT occupied FROM latest_parking WHERE device_id = %s", (dev,)
        ).fetchone()
    occupied = bool(row[0]) if row else False
    lat: list[float] = []
    for _ in range(s.visible_samples):
        free = _free_spaces(port)
        occupied = not occupied  # always a change, so the city's free spaces move
        start = time.monotonic()
        _publish_one(
            b.broker.url,
            f"{prefix}/parking/{dev}/telemetry",
            json.dumps({"occupied": occupied}).encode(),
        )
        _wait(_changed(port, free), 30, "change visible", 0.01)
        lat.append(time.monotonic() - start)
    lat.sort()
    b.report.add(
        "sensor publish → visible in /v1/vitals",
        f"p50 {_median(lat):.2f} s, p95 {lat[int(len(lat) * 0.95) - 1]:.2f} s",
        "target p95 ≤ 2 s",
    )
    b.stop(api)
    b.stop(proc)


def _free_spaces(port: int) -> float:
    data = _vitals(port)
    for ind in data["indicators"]:
        if ind["id"] == "parking.free_spaces":
            return float(ind["value"] or 0)
    return 0.0


def _publish_one(url: str, topic: str, payload: bytes) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cityvitals.settings import parse_mqtt_url

    t = parse_mqtt_url(url)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(t.host, t.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


# --- report -------------------------------------------------------------------------


# Readings per second the API benchmark fills its city at.
FILL_RATE = 5000.0
MARKER = "<!-- written by hand from here on; scripts/bench.py keeps it -->"


def write_report(b: Bench, path: Path, command: str, elapsed: float) -> None:
    """The results table with the machine, the date and the command."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"{platform.platform()}, Python {platform.python_version()}. Broker, database, "
        "collector(s), API and load generator all ran on this machine.",
        "",
        f"Reproduce with `{command}` ({elapsed / 60:.1f} minutes for this run). Figures are "
        f"medians of {b.sizes.runs} run(s); ratios compare runs of the same invocation.",
        "",
        "| what | result | target / ratio |",
        "|---|---|---|",
        *[f"| {w} | {r} | {t} |" for w, r, t in b.report.rows],
        "",
        *b.report.notes,
    ]
    # What follows the marker in an existing file is written by hand (what limits what,
    # earlier comparisons): kept.
    tail = ""
    with contextlib.suppress(OSError):
        old = path.read_text()
        if MARKER in old:
            tail = old[old.index(MARKER) :]
    lines += ["", tail or MARKER]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the suite."""
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every benchmark at full size")
    mode.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        choices=["parse", "ingest", "drain", "write", "burst", "meterburst", "api"],
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the servers' data")
    parser.add_argument(
        "--fleet", type=int, help="registered devices for the API part (where freshness bends)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.fleet:
        sizes = replace(sizes, fleet_devices=args.fleet)
        if args.fleet > FULL.fleet_devices:
            # A month of history for millions of devices takes longer than the rest.
            sizes = replace(sizes, history_days=(1,))
    out = args.out or (ROOT / ("bench-results/quick.md" if args.quick else "docs/benchmarks.md"))
    chosen = args.only or ["parse", "ingest", "drain", "write", "burst", "meterburst", "api"]
    # Fail before minutes of work, not after: every tool the chosen parts run.
    needed = {"api": ["wrk"]}
    missing = sorted({t for part in chosen for t in needed.get(part, []) if not shutil.which(t)})
    if missing:
        sys.stderr.write(
            f"bench: missing {', '.join(missing)}: run `make bench` (it installs them as "
            f"root) or `apt-get install {' '.join(missing)}`\n"
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="cityvitals-bench-"))
    work.chmod(0o711)
    bench = Bench(sizes, work)
    # Imported here, not above: it builds on this module's helpers.
    from scripts.bench_write import bench_meter_burst, bench_write

    started = time.monotonic()
    with bench.servers():
        for name in chosen:
            print(f"{name} …", flush=True)
            {
                "parse": bench_parse,
                "ingest": bench_ingest,
                "drain": bench_drain,
                "write": bench_write,
                "burst": bench_burst,
                "meterburst": bench_meter_burst,
                "api": bench_api,
            }[name](bench)
    command = "make bench-quick" if args.quick else "make bench"
    if args.only:
        command = f"python -m scripts.bench {'--quick ' if args.quick else ''}--only " + " ".join(
            args.only
        )
    if args.fleet:
        command += f" --fleet {args.fleet}"
    if args.out:
        command += f" --out {args.out}"
    write_report(bench, out, command, time.monotonic() - started)
    if args.keep:
        print(f"servers' data and logs kept in {work}")
    else:
        # A full run leaves gigabytes of database behind; the logs are small.
        for data in ("pg", "mqtt"):
            shutil.rmtree(work / data, ignore_errors=True)
        print(f"logs in {work} (--keep keeps the servers' data too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
