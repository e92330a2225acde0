"""Normal mode: drive the simulation on the wall clock and publish what it emits."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .faults import FaultConfig
from .fleet import Fleet
from .mqttlink import Link, LinkError
from .sim import Outgoing, Simulation

log = structlog.get_logger("cityvitals.simulator")

# How often the simulation is advanced; readings carry millisecond timestamps anyway.
TICK_S = 1.0
# How long a clean stop waits for the broker to acknowledge the last messages.
DRAIN_S = 15.0
# Past this many unsent messages (`--rate` too low for the fleet) the backlog is logged.
BACKLOG_WARN = 100_000


@dataclass(frozen=True)
class RunConfig:
    """What `cityvitals simulate` was asked to do."""

    mqtt_url: str
    prefix: str
    tz: str = "Asia/Shanghai"
    seed: int = 0
    speed: float = 1.0
    rate: float = 0.0
    duration_s: float | None = None
    messages: int | None = None
    start_sim: datetime | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    progress: bool = False
    offline_at_stop: bool = True


@dataclass
class RunResult:
    """What a run published."""

    published: int
    acked: int
    device_messages: int
    seconds: float
    errors: int
    stats: dict[str, int]


def sim_status_topic(prefix: str, client_id: str) -> str:
    """The simulator connection's own status topic, outside `{prefix}/#` so the
    collector never mistakes it for a device."""
    return f"{prefix}-simulator/{client_id}/status"


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Progress:
    """A live table on a terminal; a structlog line every 10 s otherwise."""

    def __init__(self, enabled: bool, fleet: Fleet) -> None:
        self.fleet = fleet
        self.live: Live | None = None
        if enabled:
            self.live = Live(console=Console(), refresh_per_second=2, transient=False)
        self.last_t = time.monotonic()
        self.last_n = 0
        self.rate = 0.0
        self.next_log = time.monotonic() + 10.0

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, link: Link, sim: Simulation, published: int, backlog: int) -> None:
        now = time.monotonic()
        if now - self.last_t >= 1.0:
            self.rate = (published - self.last_n) / (now - self.last_t)
            self.last_t, self.last_n = now, published
        else:
            return
        sim_now = sim.local(sim.sim_time(datetime.now(UTC)))
        fields = {
            "sim_time": sim_now.strftime("%Y-%m-%d %H:%M"),
            "msg_per_s": round(self.rate, 1),
            "published": published,
            "acked": link.acked,
            "inflight": link.outstanding,
            "backlog": backlog,
            "devices": len(self.fleet),
            "silent": sim.silent,
            "errors": link.stats.errors + link.failed,
            "reconnects": link.stats.reconnects,
        }
        if self.live is not None:
            table = Table(title="City Vitals simulator — 上海", show_header=False)
            table.add_column("what", style="bold cyan")
            table.add_column("value", justify="right")
            for k, v in fields.items():
                table.add_row(k.replace("_", " "), str(v))
            table.add_row("parking occupied", f"{sim.occupancy():.0%}")
            table.add_row("mean bin fill", f"{sim.bin_fill():.0f} %")
            for k, v in sorted(sim.stats.faults.items()):
                table.add_row(f"fault {k}", str(v))
            for k, v in sorted(sim.stats.messages.items()):
                if k.startswith(("bad:", "duplicate", "late")):
                    table.add_row(k, str(v))
            self.live.update(table)
        elif now >= self.next_log:
            self.next_log = now + 10.0
            log.info("progress", **fields, faults=dict(sim.stats.faults))


def run(fleet: Fleet, config: RunConfig, stop: threading.Event | None = None) -> RunResult:
    """Publish the fleet until the duration, message count or a signal says stop."""
    stop = stop or threading.Event()
    client_id = f"cityvitals-sim-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    status_topic = sim_status_topic(config.prefix, client_id)
    # One connection carries every device, so MQTT's last will can only speak for the
    # connection: it marks the simulator offline. Devices get retained online/offline
    # from `Simulation` (docs/simulator.md, "Status and last will").
    link = Link(config.mqtt_url, client_id, will=(status_topic, b"offline"))
    link.connect()
    link.publish(status_topic, b"online", retain=True)
    start = datetime.now(UTC)
    sim = Simulation(
        fleet,
        prefix=config.prefix,
        start_real=start,
        start_sim=config.start_sim,
        speed=config.speed,
        seed=config.seed,
        tz=config.tz,
        faults=config.faults,
    )
    log.info(
        "simulation_started",
        devices=len(fleet),
        kinds=fleet.counts(),
        speed=config.speed,
        sim_start=sim.local(sim.start_sim).isoformat(),
        broker=f"{link.target.host}:{link.target.port}",
        prefix=config.prefix,
    )
    backlog: deque[Outgoing] = deque(sim.start())
    t0 = time.monotonic()
    next_step = t0 + TICK_S
    tokens = config.rate
    last_refill = t0
    device_messages = 0
    warned = False
    limit = config.messages
    with _stop_on_signals(stop), _Progress(config.progress, fleet) as progress:
        while not stop.is_set():
            now = time.monotonic()
            if config.duration_s is not None and now - t0 >= config.duration_s:
                break
            if limit is not None and device_messages >= limit:
                break
            if now >= next_step:
                backlog.extend(sim.step(datetime.now(UTC)))
                next_step = max(next_step + TICK_S, now)
            if config.rate > 0:
                tokens = min(config.rate, tokens + (now - last_refill) * config.rate)
                last_refill = now
            while backlog and (config.rate <= 0 or tokens >= 1):
                msg = backlog[0]
                if msg.counted and limit is not None and device_messages >= limit:
                    break
                backlog.popleft()
                link.publish(msg.topic, msg.payload, retain=msg.retain)
                device_messages += msg.counted
                tokens -= 1
            if len(backlog) > BACKLOG_WARN and not warned:
                warned = True
                log.warning("backlog_growing", backlog=len(backlog), rate=config.rate)
            if not link.pump(max(0.0, min(0.05, next_step - time.monotonic()))):
                log.warning("broker_connection_lost", reconnecting=True)
                if not link.reconnect(deadline_s=60.0):
                    raise LinkError("broker unreachable for 60 s")
            progress.update(link, sim, link.stats.published, len(backlog))
        if config.offline_at_stop:
            for msg in sim.stop():
                link.publish(msg.topic, msg.payload, retain=True)
        link.publish(status_topic, b"offline", retain=True)
        drained = link.drain(DRAIN_S)
    link.disconnect()
    seconds = time.monotonic() - t0
    result = RunResult(
        published=link.stats.published,
        acked=link.acked,
        device_messages=device_messages,
        seconds=seconds,
        errors=link.stats.errors + link.failed,
        stats={
            **{f"sent_{k}": v for k, v in sim.stats.messages.items()},
            **{f"fault_{k}": v for k, v in sim.stats.faults.items()},
        },
    )
    log.info(
        "simulation_stopped",
        published=result.published,
        acked=result.acked,
        device_messages=device_messages,
        seconds=round(seconds, 1),
        all_acked=drained,
        **result.stats,
    )
    return result


def stdout_is_terminal() -> bool:
    """Whether to draw the live progress table."""
    return sys.stdout.isatty()
