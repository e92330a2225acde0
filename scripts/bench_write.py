"""The write path against its limits: `python -m scripts.bench --only write`.

Absolute speeds differ two to three times between machines of the same kind, so every
figure here stands beside a limit measured in the same run on the same queue: a bare
paho subscriber that only counts what it receives. Each consumer drains a backlog of
QoS 1 messages queued for its persistent session while it was away (the generator is
idle while it drains), subscribed as the collector is: `$share/<group>/<prefix>/#` at
QoS 1, each consumer in a share group of its own, so that the broker keeps a full copy
of one published queue for each and sends it the same way. A drain is timed from the
first message received to the last one stored: process start-up is a constant, not a
rate, and would weigh differently on machines and sizes.

CPU per stored reading is read from /proc: the consumer process (less what one start
of it costs) and every PostgreSQL process, over the drain.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql

from cityvitals.mqttfast import TunedClient
from cityvitals.settings import CollectorSettings, parse_mqtt_url
from cityvitals.simulator.fleet import REPORT_INTERVAL_S
from cityvitals.simulator.load import publish_load
from cityvitals.topics import Kind, subscription
from scripts import make_registry_csv as registry_csv
from scripts.bench import ROOT, Bench, _cpu_s, _median, _postgres_pids, _wait

_DEFAULTS = CollectorSettings.model_fields
# The collector's share group, unacknowledged window and session expiry (its defaults).
GROUP = str(_DEFAULTS["share_group"].default)
RECEIVE_MAXIMUM = int(_DEFAULTS["receive_maximum"].default)
SESSION_EXPIRY_S = int(_DEFAULTS["session_expiry_s"].default)
# A drain that stores nothing more for this long has lost the rest.
QUIET_S = 10.0
# What the collector stores per reading of each kind, and when it received the first.
COLLECTOR_COUNT = (
    "SELECT (SELECT count(*) FROM readings_energy) + (SELECT count(*) FROM readings_parking)"
    " + (SELECT count(*) FROM readings_waste)"
)
COLLECTOR_FIRST = (
    "SELECT least((SELECT min(received_at) FROM readings_energy WHERE received_at >= %(since)s), "
    "(SELECT min(received_at) FROM readings_parking WHERE received_at >= %(since)s), "
    "(SELECT min(received_at) FROM readings_waste WHERE received_at >= %(since)s))"
)
RAW_COUNT = "SELECT count(*) FROM raw_log"
RAW_FIRST = "SELECT min(received_at) FROM raw_log WHERE received_at >= %(since)s"

Mix = tuple[tuple[str, float], ...]
# Meter readings only, as the ingest benchmarks publish.
MINIMAL: Mix = (("energy", 1.0),)


def realistic_mix() -> Mix:
    """The city's traffic: the fleet's device shares (docs/targets.md) over each kind's
    report interval, so about 14 % parking, 2 % waste (bins weighed) and 83 % energy."""
    weights = {kind: share / REPORT_INTERVAL_S[Kind(kind)] for kind, share in registry_csv.MIX}
    total = sum(weights.values())
    return tuple((kind, w / total) for kind, w in weights.items())


REALISTIC = realistic_mix()


@dataclass(frozen=True)
class Drain:
    """One drained queue: what was stored, how fast, and the CPU it took."""

    queued: int
    stored: int
    seconds: float
    cpu_s: float = float("nan")
    pg_cpu_s: float = float("nan")
    broker_cpu_s: float = float("nan")
    # Wall seconds over which the CPU figures were taken (start of the processes to the
    # last row seen), for how many cores the drain kept busy.
    cpu_window_s: float = float("nan")

    @property
    def cores(self) -> float:
        """Cores busy over the drain: consumer(s), PostgreSQL and the broker together."""
        return (self.cpu_s + self.pg_cpu_s + self.broker_cpu_s) / self.cpu_window_s

    @property
    def rate(self) -> float:
        """Stored (or, for the bare subscriber, received) per second."""
        return self.stored / self.seconds if self.seconds > 0 else float("nan")

    @property
    def lost(self) -> int:
        """Queued and not stored."""
        return max(0, self.queued - self.stored)

    def us(self, cpu_s: float) -> float:
        """CPU seconds as microseconds per stored reading."""
        return cpu_s / self.stored * 1e6 if self.stored else float("nan")


def _publish(b: Bench, prefix: str, mix: Mix, messages: int, devices_total: int = 0) -> None:
    """Queue `messages` readings in the mix's shares, one kind after the other; each kind
    gets devices in proportion to its messages (of `devices_total`, by default the
    ingest benchmark's fleet)."""
    left = messages
    fleet = devices_total or b.sizes.ingest_devices
    for i, (kind, share) in enumerate(mix):
        n = left if i == len(mix) - 1 else round(messages * share)
        left -= n
        devices = max(1, round(fleet * share))
        load = publish_load(
            b.broker.url, prefix, devices=devices, messages=n, processes=2, kind=kind
        )
        if load.lost:
            raise RuntimeError(f"the broker did not acknowledge {load.lost} {kind} readings")


class Consumer(Protocol):
    """One drain of a queue: each consumer subscribes in a share group of its own, so the
    broker queues a full copy of what is published for each."""

    name: str

    def prepare(self) -> None:
        """Make the persistent session(s) and leave, so that the broker queues."""

    def drain(self) -> Drain:
        """Come back and take the copy queued meanwhile."""


def drain_queue(
    b: Bench, mix: Mix, prefix: str, consumers: list[Consumer], devices: int = 0
) -> list[Drain]:
    """Publish one queue for every consumer, then let them drain it one after the other."""
    for consumer in consumers:
        consumer.prepare()
    start = time.monotonic()
    _publish(b, prefix, mix, b.sizes.drain_messages, devices)
    print(
        f"    {b.sizes.drain_messages:,} queued {len(consumers)} times in "
        f"{time.monotonic() - start:.0f} s",
        flush=True,
    )
    drains: list[Drain] = []
    for consumer in consumers:
        d = consumer.drain()
        pg = "" if math.isnan(d.pg_cpu_s) else f" + PostgreSQL {d.us(d.pg_cpu_s):.0f}"
        print(
            f"    {consumer.name}: {d.rate:,.0f}/s, {d.stored:,} in {d.seconds:.1f} s, "
            f"CPU {d.us(d.cpu_s):.0f}{pg} µs each",
            flush=True,
        )
        drains.append(d)
    return drains


# --- the limit: a bare subscriber --------------------------------------------------


class Bare:
    """A subscriber in this process that only counts: the limit of the rows beside it.

    Stock paho acknowledges each message on receipt, as paho does by default; `tuned`
    is the collector's receive path (`cityvitals.mqttfast`: bulk reads, PUBLISH packets
    cut straight from the buffer), acknowledging what each read brought in one write,
    as the collector does after a commit.
    """

    def __init__(self, b: Bench, prefix: str, group: str, *, tuned: bool = False) -> None:
        self.b = b
        self.name = group
        self.client_id = f"{prefix}-{group}"
        self.topic = subscription(prefix, group)
        self.tuned = tuned

    def _client(self) -> mqtt.Client:
        if self.tuned:
            return TunedClient(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        return mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )

    def _connect(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        target = parse_mqtt_url(self.b.broker.url)
        client.connect(target.host, target.port, clean_start=False, properties=props)

    def prepare(self) -> None:
        """Connect, subscribe as the collector does (QoS 1, under a share group), leave."""
        client = self._client()

        def on_subscribe(*_: object) -> None:
            client.disconnect()

        client.on_subscribe = on_subscribe
        self._connect(client)
        client.subscribe(self.topic, qos=1)
        client.loop_forever()

    def drain(self) -> Drain:
        """Count until all queued have come; CPU is this process's over the drain."""
        n = self.b.sizes.drain_messages
        mids: list[int] = []
        got = 0
        first = last = 0.0

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            nonlocal got, first, last
            last = time.perf_counter()
            if not got:
                first = last
            got += 1
            mids.append(msg.mid)

        client = self._client()
        client.on_message = on_message
        if isinstance(client, TunedClient):

            def on_raw(topic: bytes, payload: bytes, mid: int, qos: int) -> None:
                nonlocal got, first, last
                last = time.perf_counter()
                if not got:
                    first = last
                got += 1
                mids.append(mid)

            client.on_publish_raw = on_raw
        cpu = time.process_time()
        self._connect(client)
        heard = time.monotonic()
        while got < n and time.monotonic() - heard < QUIET_S:
            before = got
            client.loop(0.5)
            if isinstance(client, TunedClient):
                client.ack_many(mids)
            mids.clear()
            if got != before:
                heard = time.monotonic()
        cpu = time.process_time() - cpu
        client.disconnect()
        return Drain(n, got, last - first, cpu_s=cpu)


# --- the collector and the raw logger ----------------------------------------------


class Watch:
    """Counts what a consumer stored, and the CPU PostgreSQL spends meanwhile, on one
    connection of its own (left out of the CPU)."""

    def __init__(self, b: Bench, db: str, count_sql: str, first_sql: str) -> None:
        self.b = b
        self.conn = psycopg.connect(db, autocommit=True)
        self.count_sql = count_sql
        self.first_sql = first_sql
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        self.own = int(row[0]) if row else 0
        self.pg0 = self._pg_cpu()

    def _pg_cpu(self) -> dict[int, float]:
        return {p: _cpu_s([p]) for p in _postgres_pids(self.b) if p != self.own}

    def _scalar(self, query: str, params: dict[str, Any] | None = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None

    def count(self) -> int:
        """Rows stored so far."""
        return int(self._scalar(self.count_sql) or 0)

    def until(self, n: int, since: datetime | None = None) -> tuple[int, float, float]:
        """Wait until `n` are stored (or nothing more comes); (stored, seconds from the
        first reception at or after `since` to the last store seen, PostgreSQL's CPU
        seconds meanwhile)."""
        stored, end, heard = -1, time.time(), time.monotonic()
        while True:
            now = int(self._scalar(self.count_sql) or 0)
            if now != stored:
                stored, end, heard = now, time.time(), time.monotonic()
            if stored >= n or time.monotonic() - heard > QUIET_S:
                break
            # Sparse polls while far from done: a count competes with the consumer.
            time.sleep(0.05 if stored >= 0.9 * n else 0.5)
        pg = self._pg_cpu()
        pg_s = sum(cpu - self.pg0.get(pid, 0.0) for pid, cpu in pg.items())
        first = self._scalar(self.first_sql, {"since": since or datetime.min.replace(tzinfo=UTC)})
        start = first.timestamp() if first is not None else end
        return stored, end - start, pg_s

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class Stored:
    """Consumer processes (collectors, the raw logger) storing into a database of their own."""

    def __init__(
        self,
        b: Bench,
        name: str,
        db: str,
        queries: tuple[str, str],
        start: Callable[[str], subprocess.Popen[bytes]],
        client_ids: list[str],
    ) -> None:
        self.b = b
        self.name = name
        self.db = db
        self.queries = queries
        self.start = start
        self.client_ids = client_ids
        self.idle_cpu = 0.0

    def prepare(self) -> None:
        """Start and stop each process once, alone: a collector stopped beside a live one
        leaves the group. What a start costs is left out of the drain's CPU."""
        self.idle_cpu = 0.0
        for client_id in self.client_ids:
            proc = self.start(client_id)
            self.idle_cpu += _cpu_s([proc.pid])
            self.b.stop(proc)

    def drain(self) -> Drain:
        """Start them all at once and wait for the rows."""
        n = self.b.sizes.drain_messages
        watch = Watch(self.b, self.db, *self.queries)
        # A database drained before holds its rows: count and time only this drain's.
        before, since = watch.count(), datetime.now(UTC)
        broker = [self.b.broker.proc.pid] if self.b.broker.proc else []
        broker0, window0 = _cpu_s(broker), time.monotonic()
        with ThreadPoolExecutor(len(self.client_ids)) as pool:
            procs = list(pool.map(self.start, self.client_ids))
        stored, seconds, pg_s = watch.until(before + n, since)
        stored -= before
        cpu = _cpu_s([p.pid for p in procs]) - self.idle_cpu
        broker_s, window = _cpu_s(broker) - broker0, time.monotonic() - window0
        watch.close()
        for p in procs:
            self.b.stop(p)
        return Drain(n, stored, seconds, cpu, pg_s, broker_s, window)


def collectors(b: Bench, prefix: str, group: str, count: int = 1, **settings: str) -> Stored:
    """`count` collectors sharing `group`, with extra settings."""
    db = b.fresh_db()
    return Stored(
        b,
        group,
        db,
        (COLLECTOR_COUNT, COLLECTOR_FIRST),
        lambda client_id: b.collector(db, prefix, client_id, share_group=group, **settings)[0],
        [f"{prefix}-{group}-{i}" for i in range(count)],
    )


def raw_logger(b: Bench, prefix: str, group: str) -> Stored:
    """scripts/raw_logger.py, in an empty database (it makes its table)."""
    db = b.pg.create_database(f"{prefix}_{group}")
    script = str(ROOT / "scripts" / "raw_logger.py")

    def start(client_id: str) -> subprocess.Popen[bytes]:
        log = b.work / f"{client_id}.log"
        seen = log.read_text().count("subscribed") if log.exists() else 0
        env = b.env(db, prefix, client_id=client_id, share_group=group, shared_subscription="on")
        proc = b.spawn([sys.executable, script], env, client_id)
        _wait(
            lambda: log.exists() and log.read_text().count("subscribed") > seen,
            60,
            "raw logger subscribed",
        )
        return proc

    return Stored(b, group, db, (RAW_COUNT, RAW_FIRST), start, [f"{prefix}-{group}"])


# --- the database's limit: COPY of the same rows --------------------------------------


def copy_limit(b: Bench, source_db: str) -> Drain:
    """The rows a collector stored, written again by binary COPY into the readings tables
    of a fresh database in one transaction: no staging, no conflict check, no state,
    what PostgreSQL itself takes to store them. CPU is PostgreSQL's over the copy."""
    tables = [f"readings_{kind.value}" for kind in Kind]
    data: dict[str, bytes] = {}
    with psycopg.connect(source_db) as src, src.cursor() as cur:
        for table in tables:
            # A hypertable's own COPY TO reads only its (empty) root: select from it.
            out = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT BINARY)")
            with cur.copy(out.format(sql.Identifier(table))) as copy:
                data[table] = b"".join(bytes(chunk) for chunk in copy)
        rows = int(cur.execute(COLLECTOR_COUNT).fetchone()[0])  # type: ignore[index]
    db = b.fresh_db()
    watch = Watch(b, db, COLLECTOR_COUNT, COLLECTOR_FIRST)
    with psycopg.connect(db) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        for table in tables:
            into = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table))
            with cur.copy(into) as copy:
                copy.write(data[table])
        conn.commit()
        seconds = time.perf_counter() - start
        # Read while the copying backend still lives: its CPU leaves with it.
        pg = watch._pg_cpu()
        stored = int(cur.execute(COLLECTOR_COUNT).fetchone()[0])  # type: ignore[index]
    pg_s = sum(cpu - watch.pg0.get(pid, 0.0) for pid, cpu in pg.items())
    watch.close()
    return Drain(rows, stored, seconds, pg_cpu_s=pg_s)


# --- the section -------------------------------------------------------------------


def _mix_text(mix: Mix) -> str:
    return ", ".join(f"{share:.0%} {kind}" for kind, share in mix)


def _rate(runs: list[Drain]) -> float:
    return _median([d.rate for d in runs])


def _us(runs: list[Drain]) -> float:
    return _median([d.us(d.cpu_s) for d in runs])


def _pg_us(runs: list[Drain]) -> float:
    return _median([d.us(d.pg_cpu_s) for d in runs])


def _split(db: str) -> str:
    """What each collector stored, from its per-minute counters: the broker's split."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT sum(stored) FROM ingest_minutely GROUP BY collector ORDER BY 1 DESC"
        ).fetchall()
    return " / ".join(f"{int(r[0]):,}" for r in rows)


def _between(limits: list[list[Consumer]], others: list[Consumer]) -> list[Consumer]:
    """The limit's drains first, between the others and last: a machine that slows down
    meanwhile (it is shared) moves the limit's median too."""
    if len(limits) == 1:
        return [*limits[0], *others]
    k = len(limits) - 1
    order: list[Consumer] = []
    for i, limit in enumerate(limits):
        order += limit
        if i < k:
            m = len(others)
            order += others[(i * m + k - 1) // k : ((i + 1) * m + k - 1) // k]
    return order


def bench_write(b: Bench) -> None:
    """Drained queues beside their limits: bare paho, the collector on two mixes, the raw
    logger, CPU per stored reading, tuned against stock paho, two collectors against one.

    One queue per mix, a copy for each consumer. On the realistic mix, the one the
    targets name, the limits and the collector are drained `runs` times (their medians
    are the figures); everything else once, to keep the section within minutes.
    """
    s = b.sizes
    n = s.drain_messages
    p = "bwm"
    bare_m = Bare(b, p, "bare")
    ours_m = collectors(b, p, GROUP)
    order: list[Consumer] = [bare_m, ours_m]
    minimal = dict(zip(order, drain_queue(b, MINIMAL, p, order), strict=True))
    p = "bwr"
    bare_r = [Bare(b, p, f"bare{i}") for i in range(s.runs)]
    tuned_r = [Bare(b, p, f"tuned{i}", tuned=True) for i in range(s.runs)]
    ours_r = [collectors(b, p, f"{GROUP}{i}") for i in range(s.runs)]
    raw_r = raw_logger(b, p, "raw")
    stock_r = collectors(b, p, "stock", mqtt_tuned="false")
    two_r = collectors(b, p, "two", count=2)
    others: list[Consumer] = [ours_r[0], raw_r, *ours_r[1:2], stock_r, two_r, *ours_r[2:]]
    order = _between([[x, t] for x, t in zip(bare_r, tuned_r, strict=True)], others)
    realistic = dict(zip(order, drain_queue(b, REALISTIC, p, order), strict=True))

    limit_m = minimal[bare_m].rate
    limit_r = _rate([realistic[c] for c in bare_r])
    limit_t = _rate([realistic[c] for c in tuned_r])
    b.report.add(
        f"write limit: bare stock paho subscriber draining {n:,} queued QoS 1 msgs, "
        "counting only, acks on receipt",
        f"minimal {limit_m:,.0f} msg/s, realistic {limit_r:,.0f} msg/s "
        f"({_us([realistic[c] for c in bare_r]):.0f} µs CPU/msg), lost "
        f"{sum(d.lost for d in [minimal[bare_m], *(realistic[c] for c in bare_r)])}",
        "the limit of the rows below",
    )
    b.report.add(
        "  same, the collector's receive path (cityvitals.mqttfast: bulk reads, PUBLISH "
        "packets cut from the buffer, one ack write per read), realistic",
        f"{limit_t:,.0f} msg/s ({_us([realistic[c] for c in tuned_r]):.0f} µs CPU/msg)",
        f"{limit_t / limit_r:.2f}x stock",
    )
    d = minimal[ours_m]
    b.report.add(
        "write: collector drain of the same queue, minimal mix (meter readings)",
        f"{d.rate:,.0f} rows/s ({d.rate / limit_m:.2f}x bare paho), "
        f"CPU {d.us(d.cpu_s):.0f} + PostgreSQL {d.us(d.pg_cpu_s):.0f} µs/reading, lost {d.lost}",
    )
    ours = [realistic[c] for c in ours_r]
    one = _rate(ours)
    copied = copy_limit(b, ours_r[0].db)
    b.report.add(
        "write limit, database side: binary COPY of the rows the collector stored "
        "(realistic) into the readings tables of a fresh database, one transaction",
        f"{copied.rate:,.0f} rows/s (PostgreSQL {copied.us(copied.pg_cpu_s):.0f} µs/row), "
        f"{copied.stored:,} rows",
        "the limit of storing anything",
    )
    b.report.add(
        f"write: collector drain of the same queue, realistic mix ({_mix_text(REALISTIC)})",
        f"{one:,.0f} rows/s ({one / limit_r:.2f}x bare paho, {one / limit_t:.2f}x tuned bare, "
        f"{one / copied.rate:.2f}x COPY), lost {sum(d.lost for d in ours)}",
        "target ≥ 0.85x bare paho and ≥ 20,000 rows/s, 0 lost",
    )
    raw = realistic[raw_r]
    b.report.add(
        "write: raw logger (scripts/raw_logger.py: topic and text by COPY, ack on receipt), "
        "realistic, same queue",
        f"{raw.rate:,.0f} rows/s ({raw.rate / limit_r:.2f}x bare paho), lost {raw.lost}",
    )
    ours_us = _us(ours) + _pg_us(ours)
    raw_us = raw.us(raw.cpu_s) + raw.us(raw.pg_cpu_s)
    b.report.add(
        "CPU per stored reading, realistic: collector + PostgreSQL vs raw logger + PostgreSQL",
        f"{_us(ours):.0f} + {_pg_us(ours):.0f} = {ours_us:.0f} µs vs "
        f"{raw.us(raw.cpu_s):.0f} + {raw.us(raw.pg_cpu_s):.0f} = {raw_us:.0f} µs",
        f"target ≤ raw logger's: {ours_us / raw_us:.2f}x",
    )
    stock = realistic[stock_r]
    b.report.add(
        "write: collector drain on stock paho (CITYVITALS_MQTT_TUNED=false), realistic",
        f"{stock.rate:,.0f} rows/s, lost {stock.lost}",
        f"tuned is {one / stock.rate:.2f}x",
    )
    two = realistic[two_r]
    one_cores = _median([realistic[c].cores for c in ours_r])
    b.report.add(
        "write: 2 collectors on the shared subscription draining the same queue, realistic",
        f"{two.rate:,.0f} rows/s ({two.rate / one:.2f}x one; stored {_split(two_r.db)}), "
        f"lost {two.lost}; cores busy (collectors + PostgreSQL + broker) {two.cores:.2f} "
        f"of {os.cpu_count()}, one collector {one_cores:.2f}",
        "target ≥ 1.6x one, or the machine is the limit",
    )
    b.report.notes.append(
        f"Write rows: each consumer drains its own copy of one queue per mix ({n:,} QoS 1 "
        "messages, queued while it was away), timed from its first message received to its "
        "last stored. On the realistic mix the bare-subscriber limits and the collector are "
        f"medians of {s.runs} drain(s); every other write figure is one drain."
    )


def bench_meter_burst(b: Bench) -> None:
    """The megacity's meters reporting at :00: one reading from each of `meter_burst`
    meters, queued at once, drained by one collector and by two (each its own copy).
    Twice: on first contact (every meter new to the database: registered as unassigned,
    first state rows) and at the next :00 (every meter known)."""
    n = b.sizes.meter_burst
    sizes = b.sizes
    # The drain helpers queue `drain_messages`: the burst's size, for this section only.
    b.sizes = dataclasses.replace(sizes, drain_messages=n)
    try:
        one = collectors(b, "mb", "one")
        two = collectors(b, "mb", "two", count=2)
        for when in ("first contact", "next :00, every meter known"):
            d1, d2 = drain_queue(b, MINIMAL, "mb", [one, two], devices=n)
            b.report.add(
                f"meter burst: {n:,} meter readings (one per meter) queued at once, {when}",
                f"1 collector {d1.seconds:.1f} s ({d1.rate:,.0f} rows/s, {d1.cores:.2f} cores "
                f"busy), 2 collectors {d2.seconds:.1f} s ({d2.rate / d1.rate:.2f}x one, "
                f"{d2.cores:.2f} cores busy), lost {d1.lost + d2.lost}",
                "target: drained within 60 s, 0 lost",
            )
    finally:
        b.sizes = sizes
