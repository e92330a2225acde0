"""Load mode: as many QoS 1 readings per second as the broker takes, counted exactly.

Each of `processes` worker processes owns one paho connection (`mqttlink.FastClient`)
and a share of the devices. Payload bodies are built before the clock starts; a send
only splices in `ts` (the wall clock, so the collector's lag figures stay honest) and
`seq`, so the generator is not what is measured. The result says how many messages
were published and how many the broker acknowledged (PUBACK), so that a benchmark
can tell loss on the way in from loss further down.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from typing import Any

from cityvitals.catalogue import DISTRICTS
from cityvitals.topics import Kind, topic_for

from .mqttlink import Link, LinkError

# Messages published between two looks at the socket and the rate.
BATCH = 200
# Body variants per device: values differ between readings without per-send work.
VARIANTS = 4


@dataclass(frozen=True)
class LoadResult:
    """What a load run did."""

    published: int
    acked: int
    seconds: float
    failed: int = 0
    errors: int = 0
    reconnects: int = 0
    processes: int = 1

    @property
    def rate(self) -> float:
        """Acknowledged messages per second."""
        return self.acked / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        """Published and never acknowledged."""
        return self.published - self.acked


def synthetic_ids(kind: Kind | str, count: int) -> list[str]:
    """Device ids in the fleet's style for `count` devices of a kind, spread over the districts.

    For energy these are exactly the meters of `build_fleet` (one per building), so a
    registered fleet and a load run with `devices=N` agree on the first N meters.
    """
    kind = Kind(kind)
    out = []
    for i in range(count):
        district = DISTRICTS[i % len(DISTRICTS)].id
        n = i // len(DISTRICTS) + 1
        if kind is Kind.ENERGY:
            out.append(f"em-{district}-{n:04d}-01")
        elif kind is Kind.WASTE:
            out.append(f"ws-{district}-{(n - 1) // 4 + 1:04d}-{(n - 1) % 4 + 1:02d}")
        else:
            out.append(f"pk-{district}-{(n - 1) // 100 + 1:04d}-{(n - 1) % 100 + 1:03d}")
    return out


def _bodies(kind: Kind, rng: random.Random) -> list[bytes]:
    """Payload tails (everything after `"ts":…,"seq":…,`) for one device."""
    out = []
    for _ in range(VARIANTS):
        if kind is Kind.ENERGY:
            kw = rng.uniform(50, 5000)
            out.append(
                b'"active_power_kw":%.2f,"voltage_v":%.1f,"power_factor":%.3f,"adjustable_kw":%.1f}'
                % (kw, rng.uniform(221, 232), rng.uniform(0.9, 0.99), kw * 0.05)
            )
        elif kind is Kind.PARKING:
            out.append(
                b'"occupied":%s,"battery_v":%.3f,"rssi_dbm":%.1f}'
                % (
                    b"true" if rng.random() < 0.6 else b"false",
                    rng.uniform(3.4, 3.65),
                    rng.uniform(-110, -70),
                )
            )
        else:
            fill = rng.uniform(5, 90)
            out.append(
                b'"bins":[{"category":"wet","fill_pct":%.1f,"weight_kg":%.1f},'
                b'{"category":"dry","fill_pct":%.1f}],"gas":{"h2s_ppm":%.2f,"nh3_ppm":%.2f,'
                b'"ch4_pct_lel":%.2f},"temp_c":%.1f,"seepage":false,"door_open":false}'
                % (fill, fill * 1.5, fill / 2, 0.5, 3.0, 1.0, rng.uniform(10, 30))
            )
    return out


@dataclass(frozen=True)
class _Job:
    mqtt_url: str
    prefix: str
    kind: str
    device_ids: tuple[str, ...]
    messages: int
    rate: float
    seed: int
    client_id: str
    ack_timeout_s: float
    qos: int


def _run_job(job: _Job, go: EventType | None, results: Any) -> dict[str, float]:
    kind = Kind(job.kind)
    rng = random.Random(job.seed)  # noqa: S311 - reproducible values, not secrets
    ids = job.device_ids
    topics = [topic_for(job.prefix, kind, d, "telemetry") for d in ids]
    bodies = [_bodies(kind, rng) for _ in ids]
    kwh = [rng.uniform(1e4, 5e6) for _ in ids] if kind is Kind.ENERGY else []
    seqs = [0] * len(ids)
    last_ts = [0] * len(ids)
    link = Link(job.mqtt_url, job.client_id)
    link.connect()
    if go is not None:
        results.put(("ready", job.client_id))
        go.wait()
    n_dev = len(ids)
    rate = job.rate
    t0 = time.perf_counter()
    sent = 0
    publish = link.publish
    qos = job.qos
    while sent < job.messages:
        batch_end = min(job.messages, sent + BATCH)
        now_ms = int(time.time() * 1000)
        for i in range(sent, batch_end):
            d = i % n_dev
            # Unique (device_id, ts) per reading, or the collector would de-duplicate it.
            ts = now_ms if now_ms > last_ts[d] else last_ts[d] + 1
            last_ts[d] = ts
            seq = seqs[d] + 1
            seqs[d] = seq
            if kwh:
                kwh[d] += 0.05
                head = b'{"ts":%d,"seq":%d,"energy_kwh":%.2f,' % (ts, seq, kwh[d])
            else:
                head = b'{"ts":%d,"seq":%d,' % (ts, seq)
            publish(topics[d], head + bodies[d][seq % VARIANTS], qos=qos)
        sent = batch_end
        if not link.pump(0):
            link.reconnect(deadline_s=job.ack_timeout_s)
        if rate > 0:
            ahead = sent / rate - (time.perf_counter() - t0)
            while ahead > 0:
                link.pump(min(ahead, 0.005))
                ahead = sent / rate - (time.perf_counter() - t0)
    end = time.monotonic() + job.ack_timeout_s
    while not link.drain(max(0.0, end - time.monotonic())):
        if time.monotonic() >= end or not link.reconnect(deadline_s=end - time.monotonic()):
            break
    seconds = time.perf_counter() - t0
    link.disconnect()
    return {
        "published": link.stats.published,
        "acked": link.acked,
        "failed": link.failed,
        "errors": link.stats.errors,
        "reconnects": link.stats.reconnects,
        "seconds": seconds,
    }


def _worker(job: _Job, go: EventType, results: Any) -> None:
    try:
        results.put(("done", _run_job(job, go, results)))
    except Exception as err:  # the parent reports it; a traceback in a child is lost
        results.put(("error", f"{type(err).__name__}: {err}"))


def publish_load(
    mqtt_url: str,
    prefix: str,
    *,
    devices: int | Sequence[str],
    messages: int,
    rate: float = 0.0,
    processes: int = 1,
    kind: Kind | str = Kind.ENERGY,
    seed: int = 0,
    qos: int = 1,
    ack_timeout_s: float = 120.0,
) -> LoadResult:
    """Publish `messages` readings from `devices` (a count or ids) at `rate` msg/s (0: flat out).

    Devices are dealt round-robin to `processes` workers, each with its own
    connection; `seconds` runs from the common start to the last acknowledgement.
    """
    ids = synthetic_ids(kind, devices) if isinstance(devices, int) else list(devices)
    if not ids:
        raise ValueError("no devices")
    if messages < 0 or processes < 1:
        raise ValueError("messages must be ≥ 0 and processes ≥ 1")
    processes = min(processes, len(ids), max(1, messages))
    run = uuid.uuid4().hex[:8]
    jobs = [
        _Job(
            mqtt_url=mqtt_url,
            prefix=prefix,
            kind=str(Kind(kind)),
            device_ids=tuple(ids[p::processes]),
            messages=messages // processes + (1 if p < messages % processes else 0),
            rate=rate / processes,
            seed=seed * 1000 + p,
            client_id=f"cityvitals-load-{os.getpid()}-{run}-{p}",
            ack_timeout_s=ack_timeout_s,
            qos=qos,
        )
        for p in range(processes)
    ]
    if processes == 1:
        r = _run_job(jobs[0], None, None)
        return LoadResult(
            int(r["published"]),
            int(r["acked"]),
            r["seconds"],
            int(r["failed"]),
            int(r["errors"]),
            int(r["reconnects"]),
            1,
        )
    return _run_processes(jobs, ack_timeout_s)


def _run_processes(jobs: list[_Job], ack_timeout_s: float) -> LoadResult:
    # spawn: a clean interpreter per worker, whatever threads the caller (pytest, an
    # API test client) has running.
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(job, go, results), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    outcome: list[dict[str, float]] = []
    errors: list[str] = []
    ready = 0
    started = 0.0
    try:
        deadline = time.monotonic() + 60.0
        while ready + len(errors) < len(jobs):
            tag, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if tag == "ready":
                ready += 1
            elif tag == "error":
                errors.append(value)
        if errors:
            raise LinkError("; ".join(errors))
        started = time.perf_counter()
        go.set()
        deadline = time.monotonic() + 3600.0 + ack_timeout_s
        while len(outcome) + len(errors) < len(jobs):
            tag, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if tag == "done":
                outcome.append(value)
            elif tag == "error":
                errors.append(value)
        seconds = time.perf_counter() - started
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if errors:
        raise LinkError("; ".join(errors))
    return LoadResult(
        published=int(sum(r["published"] for r in outcome)),
        acked=int(sum(r["acked"] for r in outcome)),
        seconds=seconds,
        failed=int(sum(r["failed"] for r in outcome)),
        errors=int(sum(r["errors"] for r in outcome)),
        reconnects=int(sum(r["reconnects"] for r in outcome)),
        processes=len(jobs),
    )
