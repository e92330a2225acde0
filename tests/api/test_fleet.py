"""The API's in-memory city state, folded change by change, equals the snapshot from scratch.

Hypothesis draws a small city — registered devices in districts, lots and buildings,
and devices nobody registered — and a random stream of what reaches it: readings
of every kind on either side of every threshold, late, duplicated and out of order,
status messages (a last will, a device back), off-hours drop-offs, registry edits
(a device moved, removed, registered again) and time passing far enough for devices
to go quiet. Two writers (two connections, two `BatchWriter`s) store it, sometimes
with one transaction open across the other's commit and across a refresh. A `Fleet`
folds the change log at random instants in between, the clock sometimes going back.
At every refresh its snapshot must equal, figure by figure and check by check, the
one `queries.fetch_fast` computes from scratch in SQL at the same instant (itself
held to the entity-by-entity build by `test_fast_path`), and a `Fleet` loaded from
nothing at the end must agree too.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityvitals.api import queries
from cityvitals.api.alerts import AlertBook
from cityvitals.api.compute import (
    Config,
    Flagged,
    FlaggedState,
    Snapshot,
    build_fast_snapshot,
    entity_thresholds,
    flagged_checks,
)
from cityvitals.api.fleet import Fleet
from cityvitals.catalogue import CATALOGUE
from cityvitals.payloads import Limits
from cityvitals.store import BatchWriter, Incoming
from cityvitals.timeutil import local_day, local_midnight
from tests.api.test_fast_path import same_snapshot

TZ = "Asia/Shanghai"
# 15:30 UTC is 23:30 in Shanghai: a stream of a few hours crosses local midnight.
BASE = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
CFG = Config(catalogue={i.id: i for i in CATALOGUE})
OCCUPANCY = CFG.catalogue["parking.occupancy_ratio"].thresholds
# (device, kind, district, site); None: not registered (auto-registered when heard).
REGISTERED: list[tuple[str, str, str | None, str | None]] = [
    ("pk-1", "parking", "xuhui", "lot-a"),
    ("pk-2", "parking", "xuhui", "lot-a"),
    ("pk-3", "parking", "jingan", "lot-b"),
    ("pk-4", "parking", None, None),
    ("ws-1", "waste", "xuhui", "hut-1"),
    ("ws-2", "waste", "minhang", "hut-2"),
    ("em-1", "energy", "xuhui", "b-1"),
    ("em-2", "energy", "xuhui", "b-1"),
    ("em-3", "energy", "minhang", None),
]
UNREGISTERED = [("pk-9", "parking"), ("ws-9", "waste"), ("em-9", "energy")]
DEVICES = [(d, k) for d, k, _, _ in REGISTERED] + UNREGISTERED


def _reading(draw: Any, kind: str) -> dict[str, Any]:
    if kind == "parking":
        return {"occupied": draw(st.booleans()), "battery_v": draw(st.sampled_from([3.0, 3.9]))}
    if kind == "waste":
        bins = [
            {
                "category": draw(st.sampled_from(["wet", "dry"])),
                "fill_pct": draw(st.sampled_from([10.0, 55.0, 79.9, 80.0, 95.0])),
                "weight_kg": draw(st.sampled_from([5.0, 20.0, 40.0])),
            }
            for _ in range(draw(st.integers(1, 2)))
        ]
        body: dict[str, Any] = {"bins": bins}
        if draw(st.booleans()):
            body["gas"] = {"h2s_ppm": draw(st.sampled_from([1.0, 10.0, 30.0]))}
        if draw(st.booleans()):
            body["temp_c"] = draw(st.sampled_from([25.0, 60.0]))
        if draw(st.booleans()):
            body["seepage"] = draw(st.booleans())
        return body
    return {
        "active_power_kw": draw(st.sampled_from([0.0, 50.0, 400.0])),
        "energy_kwh": draw(st.sampled_from([100.0, 150.0, 400.0])),
        "voltage_v": draw(st.sampled_from([220.0, 260.0])),
        "power_factor": draw(st.sampled_from([0.7, 0.95])),
        "adjustable_kw": draw(st.sampled_from([0.0, 10.0])),
    }


@st.composite
def steps(draw: Any) -> list[tuple[str, Any]]:
    """What happens, in order: batches, registry edits, refreshes, time passing."""
    out: list[tuple[str, Any]] = []
    minute = 0
    sent: list[Incoming] = []
    for _ in range(draw(st.integers(4, 14))):
        action = draw(
            st.sampled_from(["batch", "batch", "batch", "refresh", "wait", "registry", "overlap"])
        )
        if action == "wait":
            # Parking's window is 30 minutes, waste's 15, energy's 3: some go quiet.
            minute += draw(st.sampled_from([1, 4, 20, 40]))
            out.append(("refresh", minute + draw(st.sampled_from([0, 0, -30]))))
            continue
        if action == "refresh":
            out.append(("refresh", minute))
            continue
        if action == "registry":
            dev, kind, district, site = draw(st.sampled_from(REGISTERED))
            move = draw(st.sampled_from(["move", "remove", "again"]))
            out.append(("registry", (dev, kind, district, site, move)))
            continue
        batch: list[Incoming] = []
        received = BASE + timedelta(minutes=minute, seconds=30)
        for _ in range(draw(st.integers(1, 5))):
            dev, kind = draw(st.sampled_from(DEVICES))
            channel = draw(st.sampled_from(["telemetry"] * 6 + ["status", "event"]))
            if channel == "status":
                payload = draw(st.sampled_from([b"offline", b"online"]))
            elif channel == "event":
                if kind != "waste":
                    continue
                at = BASE + timedelta(minutes=minute - draw(st.integers(0, 50)))
                payload = json.dumps(
                    {
                        "ts": at.isoformat(),
                        "type": "off_hours_dropoff",
                        "id": f"{dev}-{minute}-{len(batch)}",
                    }
                ).encode()
            else:
                # Mostly now, sometimes late (older than what the device sent since).
                late = draw(st.sampled_from([0, 0, 0, 1, 25]))
                body = _reading(draw, kind)
                body["ts"] = (BASE + timedelta(minutes=minute - late)).isoformat()
                if draw(st.integers(0, 3)):
                    # Counting up with the minutes, with gaps and repeats: completeness.
                    body["seq"] = 100 + 3 * (minute - late) + draw(st.integers(0, 4))
                payload = json.dumps(body).encode()
            batch.append(Incoming(f"city/{kind}/{dev}/{channel}", payload, received))
        if sent and draw(st.integers(0, 4)) == 0:
            batch.append(draw(st.sampled_from(sent)))  # delivered again
        sent += batch
        out.append(("overlap" if action == "overlap" else "batch", batch))
        minute += draw(st.sampled_from([0, 1, 2]))
    out.append(("refresh", minute))
    return out


def _day(now: datetime) -> dict[str, Any]:
    midnight = local_midnight(now, TZ)
    return {
        "now": now,
        "day": local_day(now, TZ),
        "midnight": midnight,
        "next_midnight": local_midnight(midnight + timedelta(hours=26), TZ),
    }


async def _compare(
    url: str,
    fleet: Fleet,
    now: datetime,
    kept: tuple[FlaggedState, list[Flagged]] | None = None,
) -> tuple[Snapshot, Snapshot, tuple[int, Flagged]]:
    day = _day(now)
    th = entity_thresholds(CFG.catalogue)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await fleet.sync(conn, **day)
        slow = await queries.fetch_slow(conn, now=now, day=day["day"], midnight=day["midnight"])
        fast = await queries.fetch_fast([conn], **day, th=th, occupancy=OCCUPANCY)
        active = await AlertBook().load_active(conn)
        ingest = await queries.fetch_ingest(conn, now)
    epoch = fleet.flag_epoch
    inputs = fleet.inputs(now, active, ingest)
    flagged = flagged_checks(inputs, cfg=CFG, now=now)
    if kept is not None:
        # The engine's flagged checks, kept from refresh to refresh, equal these, and
        # what it evaluates in between (the checks it calls new) holds every new one.
        state, previous = kept
        inc, changed = state.update(inputs, cfg=CFG, now=now)
        assert sorted(map(repr, inc.checks)) == sorted(map(repr, flagged.checks))
        assert inc.city == flagged.city
        assert inc.worst == {k: v for k, v in flagged.worst.items() if v}
        old = set(previous[-1].checks) if previous else set()
        assert set(inc.checks) - old <= set(changed)
        again, none = state.update(inputs, cfg=CFG, now=now)
        assert (again, none) == (inc, [])
        previous.append(inc)
        flagged = inc
    mine = build_fast_snapshot(inputs, fleet.windowed(slow), cfg=CFG, now=now, flagged=flagged)
    return mine, build_fast_snapshot(fast, slow, cfg=CFG, now=now), (epoch, flagged)


def _register(conn: psycopg.Connection, dev: str, kind: str, district: Any, site: Any) -> None:
    conn.execute(
        "INSERT INTO devices (device_id, kind, district, site, auto_registered, "
        "contract_kw, key_consumer) VALUES (%s, %s, %s, %s, false, %s, %s) "
        "ON CONFLICT (device_id) DO UPDATE SET district = excluded.district, "
        "site = excluded.site, auto_registered = false",
        (dev, kind, district, site, 500.0 if kind == "energy" else None, dev == "em-1"),
    )


# TRUNCATE drops a hypertable's chunks on TimescaleDB, and the chunk the next insert
# creates is locked until its transaction commits: writer 0 would wait on writer 1's
# open transaction, which this one thread commits only after writer 0 returns. So the
# time series are emptied with DELETE, which keeps their chunks, and `_warm` creates
# them once before the first example.
SERIES = ("readings_parking", "readings_waste", "readings_energy", "parking_hourly", "seq_10m")
STATE = (
    "latest_parking, latest_waste, latest_energy, device_state, devices, energy_daily, "
    "waste_daily, events, dead_letters, alerts"
)


def _connect(url: str, conns: list[psycopg.Connection]) -> None:
    """(Re)open both writers' connections: a failed example may have left one mid-command."""
    for i, conn in enumerate(conns):
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()
            conns[i] = psycopg.connect(url)


def _clear(conn: psycopg.Connection) -> None:
    conn.execute(f"TRUNCATE {STATE}")
    for table in (*SERIES, "ingest_minutely"):
        conn.execute(f"DELETE FROM {table}")  # noqa: S608 - the test's own table names
    for dev, kind, district, site in REGISTERED:
        _register(conn, dev, kind, district, site)
    conn.commit()


def _warm(writer: BatchWriter, conn: psycopg.Connection) -> None:
    """Create the chunks every example writes to: a reading of each kind with a `seq`,
    and a parking sensor's free→occupied transition, committed."""
    received = BASE + timedelta(seconds=30)
    readings: list[tuple[str, str, timedelta, dict[str, Any]]] = [
        ("parking", "pk-1", timedelta(minutes=-1), {"occupied": False}),
        ("parking", "pk-1", timedelta(0), {"occupied": True}),
        ("waste", "ws-1", timedelta(0), {"bins": [{"category": "wet", "fill_pct": 10.0}]}),
        ("energy", "em-1", timedelta(0), {"active_power_kw": 1.0, "energy_kwh": 1.0}),
    ]
    for kind, dev, offset, body in readings:
        at = (BASE + offset).isoformat()
        payload = json.dumps(body | {"ts": at, "seq": 1}).encode()
        writer.write(conn, [Incoming(f"city/{kind}/{dev}/telemetry", payload, received)])
    for table in ("seq_10m", "parking_hourly"):
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)  # noqa: S608
        assert n, f"nothing written to {table}: its chunk would be made inside an example"


def test_the_folded_city_state_equals_the_snapshot_from_scratch(database_url: str) -> None:
    writers = [
        BatchWriter(prefix="city", limits=Limits(), local_tz=TZ, collector=f"w{i}")
        for i in range(2)
    ]
    conns = [psycopg.connect(database_url) for _ in writers]
    _warm(writers[0], conns[0])
    th = entity_thresholds(CFG.catalogue)
    compared = {"refreshes": 0, "values": 0, "reused": 0}

    @given(steps())
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def check(plan: list[tuple[str, Any]]) -> None:
        _connect(database_url, conns)
        _clear(conns[0])
        fleet = Fleet(th, OCCUPANCY, now=BASE)
        with ThreadPoolExecutor(1) as pool:
            built: list[tuple[int, Flagged]] = []
            kept: tuple[FlaggedState, list[Flagged]] = (FlaggedState(), [])

            def refresh(minute: int) -> None:
                now = BASE + timedelta(minutes=minute, seconds=45)
                mine, theirs, flagged = pool.submit(
                    asyncio.run, _compare(database_url, fleet, now, kept)
                ).result()
                compared["values"] += same_snapshot(mine, theirs, set())
                compared["refreshes"] += 1
                # The engine adds the last flagged checks again while `flag_epoch`
                # stands still: they must be the ones built now.
                if built and built[-1][0] == flagged[0]:
                    assert built[-1][1] == flagged[1]
                    compared["reused"] += 1
                built.append(flagged)

            pending: list[Incoming] | None = None
            turn = 0
            last = 0

            def settle() -> None:
                nonlocal pending
                if pending is not None:
                    conns[1].commit()
                    pending = None

            for action, arg in plan:
                if action == "refresh":
                    last = arg
                    refresh(arg)
                elif action == "registry":
                    settle()
                    dev, kind, district, site, move = arg
                    if move == "move":
                        _register(conns[0], dev, kind, "pudong", f"{site}-moved")
                    elif move == "remove":
                        conns[0].execute("DELETE FROM devices WHERE device_id = %s", (dev,))
                    else:
                        _register(conns[0], dev, kind, district, site)
                    conns[0].commit()
                elif action == "overlap" and pending is None:
                    # Writer 1 stores this batch and keeps its transaction open while
                    # writer 0 commits the next and the API refreshes in between.
                    messages, sources, rejections = writers[1].parse(arg)
                    writers[1].store_parsed(conns[1], messages, rejections, sources=sources)
                    pending = arg
                elif pending is not None:
                    # Other devices than the open transaction's (it holds their rows).
                    busy = {m.topic.split("/")[2] for m in pending}
                    batch = [m for m in arg if m.topic.split("/")[2] not in busy]
                    if batch:
                        writers[0].write(conns[0], batch)
                    refresh(last)
                    settle()
                else:
                    turn += 1
                    writers[turn % 2].write(conns[turn % 2], arg)
                    if len(arg) == 1:
                        # One message, one refresh: a lone change (a hut back to
                        # normal) must move `flag_epoch` by itself.
                        refresh(last)
            settle()
            refresh(last + 1)
            # And a city state loaded from nothing agrees with the folded one.
            fresh = Fleet(th, OCCUPANCY, now=BASE)
            now = BASE + timedelta(minutes=last + 1, seconds=45)
            mine, theirs, _ = pool.submit(asyncio.run, _compare(database_url, fresh, now)).result()
            same_snapshot(mine, theirs, set())

    try:
        check()
    finally:
        for c in conns:
            c.close()
    # The streams reached the figures: most refreshes compared values, not empty scopes.
    assert compared["refreshes"] >= 120
    assert compared["values"] >= 5 * compared["refreshes"]
    # And the flagged entities stood still often enough to test their reuse.
    assert compared["reused"] >= 10


@pytest.mark.parametrize(
    "change",
    ["hut back to normal", "meter back to normal", "flagged meter goes quiet", "lot empties"],
)
def test_a_lone_change_of_a_flagged_entity_moves_the_epoch(database_url: str, change: str) -> None:
    """The engine reuses the flagged entities' checks while `flag_epoch` stands still:
    one entity leaving the flagged set, with nothing else changing, must move it."""
    writer = BatchWriter(prefix="city", limits=Limits(), local_tz=TZ, collector="w0")
    th = entity_thresholds(CFG.catalogue)
    gas = {"bins": [{"category": "wet", "fill_pct": 10.0}], "gas": {"h2s_ppm": 30.0}}
    normal = {"bins": [{"category": "wet", "fill_pct": 10.0}]}
    low_pf = {"active_power_kw": 50.0, "energy_kwh": 1.0, "power_factor": 0.7}
    good_pf = {"active_power_kw": 50.0, "energy_kwh": 1.0, "power_factor": 0.95}
    Msg = tuple[str, str, dict[str, Any]]
    cases: dict[str, tuple[Msg, Msg | None, int]] = {
        "hut back to normal": (("waste", "ws-1", gas), ("waste", "ws-1", normal), 0),
        "meter back to normal": (("energy", "em-3", low_pf), ("energy", "em-3", good_pf), 0),
        "flagged meter goes quiet": (("energy", "em-3", low_pf), None, 10),
        "lot empties": (
            ("parking", "pk-1", {"occupied": True}),
            ("parking", "pk-1", {"occupied": False}),
            0,
        ),
    }
    first, then, wait = cases[change]

    def send(conn: psycopg.Connection, what: Msg, minute: int) -> None:
        kind, dev, body = what
        at = BASE + timedelta(minutes=minute)
        payload = json.dumps(body | {"ts": at.isoformat()}).encode()
        writer.write(conn, [Incoming(f"city/{kind}/{dev}/telemetry", payload, at)])

    with psycopg.connect(database_url) as conn, ThreadPoolExecutor(1) as pool:
        _clear(conn)
        # Lot a's other sensor reports free: one occupied of two is the lot's 50 %,
        # under its thresholds; pk-2 goes first so the lot is flagged only by pk-1.
        send(conn, ("parking", "pk-2", {"occupied": True}), 0)
        send(conn, first, 0)
        fleet = Fleet(th, OCCUPANCY, now=BASE)
        _, _, (epoch, flagged) = pool.submit(
            asyncio.run, _compare(database_url, fleet, BASE + timedelta(minutes=1))
        ).result()
        assert flagged.checks, "the entity is flagged to begin with"
        if then is not None:
            send(conn, then, 1)
        _, _, (epoch2, flagged2) = pool.submit(
            asyncio.run, _compare(database_url, fleet, BASE + timedelta(minutes=1 + wait))
        ).result()
    assert flagged2 != flagged
    assert epoch2 != epoch
