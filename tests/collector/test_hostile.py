"""Database-hostile input, through the parser and through the real pipeline.

What a database cannot hold or chokes on, in every place a device can put it: U+0000 in
keys and values at any depth (unknown fields, event ids, types and attrs, bin
categories), strings and keys up to the 8 KiB payload limit, integers beyond int8 and
beyond a double, nesting as deep as the size limit allows, text outside the Basic
Multilingual Plane in every string position, and readings the database itself refuses
(tests/store/refusal.py). The contract is docs/wire.md ("Rules every message meets",
the delivery guarantee) and docs/dead-letters.md (`unstorable`): every message is stored
or dead-lettered, exactly once, with the reason the parser gives it (a refusal of the
database as `unstorable` with its SQLSTATE); no message holds up the ones behind it;
and a refusal of the data is never an outage, so `database_up` stays 1.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from cityvitals.payloads import CATEGORIES, DeviceStatus, Event, Limits, Reading, parse_message
from cityvitals.reasons import Reason, Rejection
from cityvitals.topics import Kind
from tests.collector.test_ingest import Factory
from tests.fix_services import CollectorProcess, Publisher, wait_until
from tests.store.refusal import REFUSED_KW, install_refusal

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
MAX_PAYLOAD = Limits().max_payload_bytes
# Readings published after a hostile batch are stored within this many seconds.
SENTINEL_S = 5.0
# A refusal's detail carries the database's SQLSTATE: five digits or capitals.
SQLSTATE = re.compile(r"\b(?=[0-9A-Z]*[0-9])[0-9A-Z]{5}\b")


# --- values json.dumps cannot write, and short reprs for long ones ---------------------


class Long(str):
    """A long string (or key), shown by its length rather than its text."""

    __slots__ = ()

    def __repr__(self) -> str:
        head = str.__repr__(self[:6])
        return f"Long({head}…, {len(self)} chars)"


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: number literals beyond a double, deep nesting."""

    text: str

    def __repr__(self) -> str:
        if len(self.text) <= 48:
            return f"Raw({self.text!r})"
        return f"Raw({self.text[:16]!r}…{self.text[-16:]!r}, {len(self.text)} chars)"


@dataclass(frozen=True)
class When:
    """A `ts` relative to the moment of publishing, as RFC 3339 or epoch milliseconds."""

    offset_s: int
    epoch_ms: bool


def render(value: Any, now: datetime, ensure_ascii: bool) -> str:
    """JSON text of a drawn value; `Raw` as written, `When` against `now`."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, When):
        ts = now + timedelta(seconds=value.offset_s)
        return str(int(ts.timestamp() * 1000)) if value.epoch_ms else json.dumps(ts.isoformat())
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k, ensure_ascii=ensure_ascii)}:{render(v, now, ensure_ascii)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, now, ensure_ascii) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ensure_ascii)
    return json.dumps(value)


# --- strategies ------------------------------------------------------------------------

nul_text = st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=6), st.text(max_size=6))
# Outside the BMP: emoji (with joiners and flags), CJK Extension B and later, math letters.
astral_text = st.text(
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, exclude_categories=("Cn", "Co")),
    min_size=1,
    max_size=12,
) | st.sampled_from(
    ["😀", "👩‍👩‍👧‍👦", "🇨🇳", "𠀀𪚥𰻞", "\U0001d518\U0001d52b\U0001d526", "湿垃圾😀", "a😀\x00"]
)


def _not_utf8(err: UnicodeError) -> tuple[bytes, int]:
    """Encode lone surrogates as bytes no UTF-8 decoder accepts: U+DC80-U+DCFF as the
    byte they stand for (as `surrogateescape`), the others as `surrogatepass` does."""
    assert isinstance(err, UnicodeEncodeError)
    out = b"".join(
        bytes([ord(c) - 0xDC00])
        if 0xDC80 <= ord(c) <= 0xDCFF
        else c.encode("utf-8", "surrogatepass")
        for c in err.object[err.start : err.end]
    )
    return out, err.end


codecs.register_error("cityvitals-not-utf8", _not_utf8)
# Written with ensure_ascii as \udXXX escapes (malformed JSON); without it as bytes that
# are no UTF-8: a surrogate (ED A0 80), a stray byte (FF), an overlong NUL (C0 80), a
# code point past U+10FFFF (F4 90 80 80).
not_utf8 = st.sampled_from(
    ["\ud800", "x\udfff", "\udbff\udbff", "\udcff", "wet\udcc0\udc80", "\udcf4\udc90\udc80\udc80"]
)
LONG_CHARS = ["x", "é", "中", "😀", "𠀀", "\x00"]
# Up to and past the payload limit; 2,730 bytes is the btree row limit (2704) and a bit.
long_text = st.builds(
    lambda c, n: Long(c * n),
    st.sampled_from(LONG_CHARS),
    st.sampled_from([129, 1000, 2730, 3000, 4000, 8000]) | st.integers(100, MAX_PAYLOAD + 8),
)
hostile_text = st.one_of(st.text(max_size=8), nul_text, astral_text, long_text, not_utf8)
hostile_keys = hostile_text | st.sampled_from(["\x00", "ts\x00", "😀", Long("k" * 3000)])

huge_ints = (
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, -(2**64), 10**30, 10**309])
    | st.integers(min_value=2**63, max_value=2**1000)
    | st.integers(min_value=-(2**1000), max_value=-(2**63) - 1)
)
# Number literals no double holds, and integers past Python's 4,300-digit limit.
huge_literals = st.sampled_from(
    [
        "1e999",
        "-1e999",
        "1e-999",
        "2.5e308",
        "1" + "0" * 400,
        "-" + "9" * 4301,
        "1" + "0" * 5000,
        "12345678901234567890123456789.5",
        "0." + "0" * 400 + "1",
    ]
).map(Raw)


# Around the interpreter's recursion limit (1000), which a recursive decoder meets.
DEPTHS = [500, 975, 979, 983, 990, 995, 1000, 1001, 2000]


@st.composite
def deep(draw: Any, keys: tuple[str, ...] = ("k", "\x00", "😀"), most: int = 0) -> Raw:
    """Arrays, objects or both, `depth` containers deep, up to what fits in 8 KiB."""
    shape = draw(st.sampled_from(["array", "object", "mixed"]))
    k = json.dumps(draw(st.sampled_from(keys)))
    per_container = {"array": 2, "object": len(k) + 3, "mixed": (len(k) + 5) / 2}[shape]
    fits = int(MAX_PAYLOAD // per_container)
    depth = draw(st.integers(1, most) if most else st.sampled_from(DEPTHS) | st.integers(1, fits))
    if shape == "array":
        return Raw("[" * depth + "]" * depth)
    if shape == "object":
        return Raw(("{" + k + ":") * depth + "null" + "}" * depth)
    pairs = max(depth // 2, 1)
    return Raw(("[{" + k + ":") * pairs + "1" + "}]" * pairs)


hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
    huge_ints,
    huge_literals,
)
hostile_values = (
    st.recursive(
        hostile_scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(hostile_keys, inner, max_size=3)
        ),
        max_leaves=6,
    )
    | deep()
)
# Unknown fields: ignored in readings, kept as `attrs` in events.
extras = st.dictionaries(hostile_keys, hostile_values, max_size=3)
OFFSETS = [0, -60, -3600, -86400, 120, 3600, -8 * 86400]  # the last two: skew, too old


def mostly(valid: Any, *hostile: Any) -> Any:
    """`valid` three times in four, so that hostile unknown fields reach the database."""
    return st.one_of(valid, valid, valid, st.one_of(*hostile))


timestamps = mostly(
    st.builds(When, st.sampled_from(OFFSETS), st.booleans()),
    huge_ints,
    huge_literals,
    hostile_text,
)
seqs = mostly(st.integers(0, 2**63 - 1), st.integers(-3, -1), huge_ints, huge_literals)


def _merged(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    return {**more, **base} if more else base


def _reading(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    common = {"ts": timestamps, "seq": seqs}
    return st.builds(
        _merged, st.fixed_dictionaries(required, optional={**optional, **common}), extras
    )


numbers = mostly(st.floats(0, 5), st.floats(-1e6, 1e6), huge_literals)
categories = mostly(
    st.sampled_from(CATEGORIES), st.sampled_from(["wet\x00", "湿垃圾", "dry😀"]), hostile_text
)
bins = st.builds(
    _merged,
    st.fixed_dictionaries(
        {"category": categories, "fill_pct": mostly(st.floats(0, 100), huge_literals)},
        optional={"weight_kg": numbers},
    ),
    extras,
)
bodies: dict[str, Any] = {
    "parking": _reading(
        {"occupied": mostly(st.booleans(), hostile_text)},
        {"battery_v": numbers, "rssi_dbm": numbers},
    ),
    "waste": _reading(
        {"bins": mostly(st.lists(bins, min_size=1, max_size=4), st.lists(bins, max_size=9))},
        {
            "gas": st.builds(
                _merged, st.fixed_dictionaries({}, optional={"h2s_ppm": numbers}), extras
            )
        },
    ),
    "energy": _reading(
        {
            "active_power_kw": st.one_of(
                st.just(REFUSED_KW), st.floats(-1e5, 1e5), st.floats(-1e5, 1e5), huge_literals
            )
        },
        {"energy_kwh": numbers, "voltage_v": numbers},
    ),
}
event_types = mostly(
    st.sampled_from(["off_hours_dropoff", "lid_jam", "outage", "a" * 32]),
    st.sampled_from([Long("a" * 33), Long("a" * 7000)]),
    hostile_text,
)
event_ids = mostly(
    st.text(min_size=1, max_size=12) | astral_text | st.sampled_from([Long("😀" * 128)]),
    nul_text,
    st.sampled_from(["", Long("i" * 128), Long("𠀀" * 129), Long("i" * 129), Long("x" * 7000)]),
)
event_bodies = st.builds(
    _merged,
    st.fixed_dictionaries(
        {"type": event_types, "id": event_ids}, optional={"ts": timestamps, "seq": seqs}
    ),
    extras | st.fixed_dictionaries({Long("k" * 3000): hostile_values}),
)
statuses = st.sampled_from(["online", " OFFLINE ", '"offline"', '"online\\u0000"', "online😀"]) | (
    hostile_text
)


# Hostile, yet storable: known fields valid, the database-hostile part in what is kept
# as it is (event ids and attrs) or ignored (unknown fields of readings). Each of these
# must be stored (or refused by the database as `unstorable`, never lost).
storable_text = st.one_of(
    st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=8),
    astral_text.filter(lambda t: "\x00" not in t),
    long_text.filter(lambda t: "\x00" not in t),
)
storable_values = (
    st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False)
        | storable_text
        | huge_ints
        | st.sampled_from(["1" + "0" * 400, "-" + "9" * 4300, "0." + "0" * 400 + "1"]).map(Raw),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(storable_text, inner, max_size=3)
        ),
        max_leaves=6,
    )
    # As deep as the parser and the write path manage today (see the deep tests below).
    | deep(keys=("k", "😀"), most=900)
)
storable_extras = st.dictionaries(storable_text, storable_values, min_size=1, max_size=3) | (
    st.fixed_dictionaries({Long("k" * 3000): storable_values})
)
storable_ts = st.builds(When, st.sampled_from(OFFSETS[:5]), st.booleans())
storable_common = {"ts": storable_ts, "seq": st.integers(0, 2**63 - 1)}
valid_bins = st.lists(
    st.fixed_dictionaries({"category": st.sampled_from(CATEGORIES), "fill_pct": st.floats(0, 100)}),
    min_size=1,
    max_size=8,
)
storable_bodies: dict[str, Any] = {
    kind: st.builds(
        _merged, st.fixed_dictionaries(required, optional=storable_common), storable_extras
    )
    for kind, required in (
        ("parking", {"occupied": st.booleans()}),
        ("waste", {"bins": valid_bins}),
        ("energy", {"active_power_kw": st.just(REFUSED_KW) | st.floats(-1e5, 1e5)}),
    )
}
storable_events = st.builds(
    _merged,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["off_hours_dropoff", "lid_jam", "outage", "a" * 32]),
            "id": st.one_of(
                storable_text.filter(lambda t: 1 <= len(t) <= 128),
                st.sampled_from([Long("i" * 128), Long("😀" * 128), Long("𠀀" * 128)]),
            ),
        },
        optional=storable_common,
    ),
    storable_extras,
)


class Hostile:
    """One message before it has a device id: kind, channel, body, how it is written.

    Its repr is what it sends, shortened: bodies run to the 8 KiB limit and beyond.
    """

    __slots__ = ("body", "channel", "device_suffix", "ensure_ascii", "kind")

    def __init__(
        self, kind: str, channel: str, body: Any, device_suffix: str, ensure_ascii: bool
    ) -> None:
        self.kind = kind
        self.channel = channel
        self.body = body
        # Appended to the device id: text outside the grammar makes it `bad_topic`.
        self.device_suffix = device_suffix
        self.ensure_ascii = ensure_ascii

    def topic(self, prefix: str, device_id: str) -> str:
        return f"{prefix}/{self.kind}/{device_id}{self.device_suffix}/{self.channel}"

    def payload(self, now: datetime) -> bytes:
        text = self.body if self.channel == "status" else render(self.body, now, self.ensure_ascii)
        return str(text).encode("utf-8", "cityvitals-not-utf8")

    def __repr__(self) -> str:
        # What is sent (`ts` offsets against NOW), shortened: bodies run to 8 KiB.
        p = self.payload(NOW)
        shown = repr(p) if len(p) <= 300 else f"{p[:200]!r} … {p[-60:]!r} ({len(p)} bytes)"
        return f"<{self.kind}/dev{self.device_suffix}/{self.channel} {shown}>"


# One message in ten on a device id outside the grammar (`bad_topic`, kept as sent).
suffixes = st.sampled_from(["" for _ in range(27)] + ["😀", "𠀀", "中"])
kinds = st.sampled_from(["parking", "waste", "energy"])


def _hostile(*parts: Any) -> Any:
    return st.tuples(*parts).map(lambda t: Hostile(*t))


hostile_messages = st.one_of(
    kinds.flatmap(
        lambda k: _hostile(st.just(k), st.just("telemetry"), bodies[k], suffixes, st.booleans())
    ),
    _hostile(kinds, st.just("event"), event_bodies, suffixes, st.booleans()),
    _hostile(kinds, st.just("status"), statuses, suffixes, st.booleans()),
    kinds.flatmap(
        lambda k: _hostile(
            st.just(k), st.just("telemetry"), storable_bodies[k], st.just(""), st.booleans()
        )
    ),
    _hostile(kinds, st.just("event"), storable_events, st.just(""), st.booleans()),
)


# --- what the collector must make of each message --------------------------------------

STORED = "stored"
# Stored, or dead-lettered for any reason: only that it is kept, once, is asserted.
KEPT = "stored or dead-lettered"


def expected_outcome(topic: str, payload: bytes, now: datetime, prefix: str) -> str:
    """A reason code, `stored`, or what the parser raised (then either is accepted)."""
    try:
        parsed = parse_message(topic, payload, now, prefix=prefix, limits=Limits())
    except Exception as err:  # a parser bug: the pipeline must still keep the message
        return f"parser raised {type(err).__name__}"
    if isinstance(parsed, Rejection):
        return parsed.reason.value
    if (
        isinstance(parsed, Reading)
        and parsed.kind is Kind.ENERGY
        and getattr(parsed.payload, "active_power_kw", None) == REFUSED_KW
    ):
        return Reason.UNSTORABLE.value
    return STORED


def expected_outcomes(messages: list[tuple[str, bytes]], now: datetime, prefix: str) -> list[str]:
    """The parser's verdicts, on a fresh stack as in the collector (nesting counts on it)."""
    with ThreadPoolExecutor(1) as pool:
        return list(pool.map(lambda m: expected_outcome(m[0], m[1], now, prefix), messages))


class Watch:
    """The collector seen from outside: alive, its metrics, every `database_up` seen."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.database_up: list[float] = []
        # Subscribed is not yet "has reached the database": the gauge reads 0 until the
        # first database operation, which on a loaded machine may come a scrape later.
        # What is watched is whether hostile input ever takes the database away.
        wait_until(
            lambda: collector.metrics().get("cityvitals_collector_database_up") == 1.0,
            30,
            "the collector's first database operation",
        )

    def metrics(self) -> dict[str, float]:
        self._alive()
        try:
            m = self.collector.metrics()
        except OSError:
            self._alive(wait_s=3)  # a scrape that fails as the process dies
            raise
        self.database_up.append(m.get("cityvitals_collector_database_up", -1.0))
        return m

    def _alive(self, wait_s: float = 0) -> None:
        proc = self.collector.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        if proc is None or proc.returncode is not None:
            code = None if proc is None else proc.returncode
            raise AssertionError(
                f"the collector exited (code {code}); log tail:\n{self.collector.log()[-4000:]}"
            )

    def until(
        self, check: Callable[[dict[str, float]], bool], deadline_s: float, what: str
    ) -> float:
        """Poll metrics (and `check`) until it holds; the seconds it took."""
        start = time.monotonic()
        while True:
            if check(self.metrics()):
                return time.monotonic() - start
            if time.monotonic() - start > deadline_s:
                raise AssertionError(
                    f"timed out after {deadline_s:.0f} s waiting for {what}; log tail:\n"
                    f"{self.collector.log()[-3000:]}"
                )
            time.sleep(0.05)

    def assert_never_down(self) -> None:
        final = self.metrics()
        assert final.get("cityvitals_collector_database_up") == 1.0
        assert self.database_up
        assert all(v == 1.0 for v in self.database_up), (
            f"database_up was not 1 in {sum(v != 1.0 for v in self.database_up)} of "
            f"{len(self.database_up)} scrapes"
        )
        log = self.collector.log()
        assert "database_unavailable" not in log, log[-3000:]
        assert "batch_failed" not in log, log[-3000:]
        assert final.get("cityvitals_collector_database_errors_total") == 0.0


def _sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix))


def _received(m: dict[str, float]) -> float:
    return m.get("cityvitals_collector_messages_received_total", 0.0)


_STORED_QUERY = """
SELECT device_id FROM readings_parking WHERE device_id = ANY(%(d)s)
UNION ALL SELECT device_id FROM readings_waste WHERE device_id = ANY(%(d)s)
UNION ALL SELECT device_id FROM readings_energy WHERE device_id = ANY(%(d)s)
UNION ALL SELECT device_id FROM events WHERE device_id = ANY(%(d)s)
UNION ALL SELECT device_id FROM device_state WHERE device_id = ANY(%(s)s) AND status_at IS NOT NULL
"""


def check_outcomes(
    conn: psycopg.Connection,
    messages: list[tuple[str, bytes]],
    devices: list[str],
    channels: list[str],
    expected: list[str],
) -> Counter[str]:
    """Each message stored or dead-lettered once, as expected; the outcomes seen."""
    letters: dict[str, list[tuple[str, str]]] = {}
    for topic, reason, detail in conn.execute(
        "SELECT topic, reason, detail FROM dead_letters WHERE topic = ANY(%s)",
        ([t for t, _ in messages],),
    ):
        letters.setdefault(topic, []).append((reason, detail))
    data = [d for d, c in zip(devices, channels, strict=True) if c != "status"]
    status = [d for d, c in zip(devices, channels, strict=True) if c == "status"]
    stored = Counter(r[0] for r in conn.execute(_STORED_QUERY, {"d": data, "s": status}))
    wrong: list[str] = []
    seen: Counter[str] = Counter()
    kept_as = {STORED, *(r.value for r in Reason)}
    for (topic, payload), device, want in zip(messages, devices, expected, strict=True):
        dead = letters.get(topic, [])
        rows = stored[device]
        if len(dead) + rows != 1:
            got = f"{len(dead)} dead letters and {rows} rows"
        elif not dead:
            got = STORED
        else:
            reason, detail = dead[0]
            got = reason
            if not reason or not detail:
                got = f"a dead letter without reason or detail {dead[0]!r}"
            elif reason == Reason.UNSTORABLE.value and not SQLSTATE.search(detail):
                got = f"unstorable without an SQLSTATE: {detail!r}"
            elif want == reason == Reason.UNSTORABLE.value and "22023" not in detail:
                got = f"unstorable without the refusal's SQLSTATE 22023: {detail!r}"
        ok = got == want
        if want == STORED and got == Reason.UNSTORABLE.value:
            ok = True  # a refusal the parser cannot foresee is allowed, as `unstorable`
        if (want == KEPT or want.startswith("parser raised")) and got in kept_as:
            ok = True
        if not ok:
            wrong.append(f"{topic} {payload[:200]!r}: expected {want}, got {got}")
        seen[got] += 1
    assert not wrong, "messages not kept as the contract says:\n" + "\n".join(wrong)
    return seen


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def _sentinel(prefix: str, device: str, now: datetime) -> tuple[str, bytes]:
    body = {"occupied": True, "ts": now.isoformat()}
    return f"{prefix}/parking/{device}/telemetry", json.dumps(body).encode()


def _stored_rows(conn: psycopg.Connection, table: str, device: str | None = None) -> int:
    query = f"SELECT count(*) FROM {table}"  # noqa: S608 - table names of this module
    row = (
        conn.execute(query + " WHERE device_id = %s", (device,)) if device else conn.execute(query)
    ).fetchone()
    return int(row[0]) if row else 0


# --- parse level -----------------------------------------------------------------------


@given(message=hostile_messages)
@settings(max_examples=300, deadline=None)
def test_any_hostile_message_parses_to_a_value_never_an_exception(message: Hostile) -> None:
    note(repr(message))  # short, where Hypothesis would print every field in full
    topic = message.topic("city", "dev-1")
    result = parse_message(topic, message.payload(NOW), NOW, prefix="city", limits=Limits())
    assert isinstance(result, Reading | DeviceStatus | Event | Rejection)
    if isinstance(result, Rejection):
        assert result.detail


@pytest.mark.parametrize(
    "literal",
    [
        "9223372036854775808",
        "18446744073709551616",
        "1" + "0" * 400,
        "1" + "0" * 5000,
        "-1",
        "-" + "9" * 5000,
    ],
    ids=["2^63", "2^64", "401-digits", "5001-digits", "-1", "-5000-digits"],
)
def test_a_seq_outside_int8_is_out_of_range_however_many_digits(literal: str) -> None:
    payload = ('{"active_power_kw": 1.0, "seq": ' + literal + "}").encode()
    result = parse_message(
        "city/energy/em-1/telemetry", payload, NOW, prefix="city", limits=Limits()
    )
    assert isinstance(result, Rejection)
    assert result.reason is Reason.OUT_OF_RANGE, result


NOT_UTF8 = {
    "event-id": ("event", b'{"type": "outage", "id": "\xed\xa0\x80"}'),
    "event-attr": ("event", b'{"type": "outage", "id": "e1", "camera": "\xff"}'),
    "bin-category": ("waste", b'{"bins": [{"category": "wet\xc0\x80", "fill_pct": 1}]}'),
    "ts": ("energy", b'{"active_power_kw": 1.0, "ts": "\xf4\x90\x80\x80"}'),
    "unknown-field": ("energy", b'{"active_power_kw": 1.0, "firmware": "\xff"}'),
    "unknown-field-and-nul": ("energy", b'{"active_power_kw": 1.0, "a": "\xff", "b": "\\u0000"}'),
}


@pytest.mark.parametrize("where", list(NOT_UTF8))
def test_bytes_that_are_no_utf8_are_invalid_json_wherever_they_are(where: str) -> None:
    kind, payload = NOT_UTF8[where]
    channel = "event" if kind == "event" else "telemetry"
    topic = f"city/{'energy' if kind == 'event' else kind}/dev-1/{channel}"
    result = parse_message(topic, payload, NOW, prefix="city", limits=Limits())
    assert isinstance(result, Rejection), result
    assert result.reason is Reason.INVALID_JSON, result


NESTS = {
    "arrays-500": "[" * 500 + "]" * 500,
    "arrays-1000": "[" * 1000 + "]" * 1000,
    "arrays-4000": "[" * 4000 + "]" * 4000,
    "objects-500": '{"k":' * 500 + "1" + "}" * 500,
    "objects-1300": '{"k":' * 1300 + "1" + "}" * 1300,
}
NEST_HEADS = {
    "telemetry": '{"active_power_kw": 1.5, "firmware": ',
    "event": '{"type": "outage", "id": "e1", "trace": ',
}


@pytest.mark.parametrize("channel", list(NEST_HEADS))
@pytest.mark.parametrize("nest", list(NESTS))
def test_nesting_as_deep_as_the_size_limit_allows_parses_to_a_value(
    nest: str, channel: str
) -> None:
    payload = (NEST_HEADS[channel] + NESTS[nest] + "}").encode()
    assert len(payload) <= MAX_PAYLOAD
    for extra in (b"", b', "x": "\\u0000"'):  # with U+0000 too: its own check walks it
        body = payload[:-1] + extra + b"}"
        result = parse_message(
            f"city/energy/dev-1/{channel}", body, NOW, prefix="city", limits=Limits()
        )
        assert isinstance(result, Reading | Event | Rejection)


# --- through the real pipeline ---------------------------------------------------------


def test_hostile_messages_through_the_pipeline_are_each_stored_or_dead_lettered(
    collector_factory: Factory,
    database_url: str,
    db: psycopg.Connection,
    mqtt_url: str,
    topic_prefix: str,
    publisher: Publisher,
) -> None:
    install_refusal(database_url)
    collector = collector_factory(database_url, mqtt_url, topic_prefix)
    collector.start_and_wait()
    watch = Watch(collector)
    examples = itertools.count()
    sent = 0
    seen: Counter[str] = Counter()

    @given(
        batch=st.lists(hostile_messages, min_size=1, max_size=12),
        refused_at=st.integers(0, 12),
    )
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        # The pipeline is stateful: shrinking would replay against a changed database
        # (and a crashed collector); the first failing example is the one to report.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    def run(batch: list[Hostile], refused_at: int) -> None:
        nonlocal sent
        n = next(examples)
        note("\n".join(map(repr, batch)))
        now = datetime.now(UTC)
        # One reading the database refuses, somewhere in every batch.
        refused = Hostile("energy", "telemetry", {"active_power_kw": REFUSED_KW}, "", True)
        batch = [*batch[:refused_at], refused, *batch[refused_at:]]
        devices = [f"h{n}x{i}" for i in range(len(batch))]
        messages = [
            (h.topic(topic_prefix, d), h.payload(now)) for h, d in zip(batch, devices, strict=True)
        ]
        expected = expected_outcomes(messages, now, topic_prefix)
        publisher.publish_all(messages)
        sentinel = f"s{n}"
        publisher.publish_all([_sentinel(topic_prefix, sentinel, now)])
        sent += len(messages) + 1
        watch.until(
            lambda _: _stored_rows(db, "readings_parking", sentinel) == 1,
            SENTINEL_S,
            f"the reading sent after batch {n} to be stored",
        )
        watch.until(lambda m: _received(m) == sent, 30, f"{sent} messages handled")
        outcomes = check_outcomes(
            db,
            messages,
            [d + h.device_suffix for h, d in zip(batch, devices, strict=True)],
            [h.channel for h in batch],
            expected,
        )
        for outcome in outcomes:
            event(f"outcome: {outcome}")
        seen.update(outcomes)

    run()
    m = watch.metrics()
    stored = _sum(m, "cityvitals_collector_readings_stored_total")
    dups = _sum(m, "cityvitals_collector_duplicates_total")
    rejected = _sum(m, "cityvitals_collector_rejected_total")
    assert sent == _received(m) == stored + dups + rejected
    dead = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason = 'unstorable') FROM dead_letters"
    ).fetchone()
    assert dead == (rejected, m['cityvitals_collector_rejected_total{reason="unstorable"}'])
    assert seen[Reason.UNSTORABLE.value] >= next(examples), seen
    watch.assert_never_down()


def test_the_historical_poison_holds_up_none_of_the_readings_behind_it(
    collector_factory: Factory,
    database_url: str,
    db: psycopg.Connection,
    mqtt_url: str,
    topic_prefix: str,
    publisher: Publisher,
) -> None:
    collector = collector_factory(database_url, mqtt_url, topic_prefix)
    collector.start_and_wait()
    watch = Watch(collector)
    now = datetime.now(UTC).replace(microsecond=0)
    p = topic_prefix
    # An event holding U+0000 in its id, and one holding it in an attr value: what once
    # stopped the collector's whole stream (docs/dead-letters.md).
    poisons = [
        (f"{p}/waste/ws-1/event", b'{"type": "lid_jam", "id": "cam3-\\u0000-7"}'),
        (
            f"{p}/waste/ws-1/event",
            b'{"type": "off_hours_dropoff", "id": "cam3-8", "camera": "cam\\u00003"}',
        ),
    ]
    readings = [
        (
            f"{p}/energy/em-{i % 10}/telemetry",
            json.dumps(
                {"ts": (now - timedelta(seconds=i // 10)).isoformat(), "active_power_kw": i / 10}
            ).encode(),
        )
        for i in range(1000)
    ]
    started = time.monotonic()
    publisher.publish_all(poisons + readings)
    deadline = started + 30
    stored = 0
    while time.monotonic() < deadline:
        watch.metrics()
        stored = _stored_rows(db, "readings_energy")
        if stored == 1000:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert stored == 1000, (
        f"{stored} of 1000 readings stored {elapsed:.1f} s after publishing them behind "
        f"the poison; log tail:\n{collector.log()[-3000:]}"
    )
    letters = db.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY id").fetchall()
    assert [(r, bytes(pl)) for r, _, pl in letters] == [
        ("schema", poisons[0][1]),
        ("schema", poisons[1][1]),
    ]
    assert all("U+0000" in d for _, d, _ in letters), letters
    assert _stored_rows(db, "events") == 0
    watch.assert_never_down()


def test_nesting_as_deep_as_the_size_limit_allows_is_stored_or_dead_lettered(
    collector_factory: Factory,
    db: psycopg.Connection,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    publisher: Publisher,
) -> None:
    collector = collector_factory(database_url, mqtt_url, topic_prefix)
    collector.start_and_wait()
    watch = Watch(collector)
    now = datetime.now(UTC)
    messages: list[tuple[str, bytes]] = []
    devices: list[str] = []
    channels: list[str] = []
    # Around the recursion limit, one depth at a time: the parser and the write path
    # (which encodes an event's attrs) meet it a few levels apart.
    sweep = {f"arrays-{d}": "[" * d + "]" * d for d in range(960, 1000)}
    for i, nest in enumerate([*NESTS.values(), *sweep.values()]):
        for channel, head in NEST_HEADS.items():
            device = f"deep-{i}-{channel}"
            messages.append(
                (f"{topic_prefix}/energy/{device}/{channel}", (head + nest + "}").encode())
            )
            devices.append(device)
            channels.append(channel)
    publisher.publish_all(messages)
    publisher.publish_all([_sentinel(topic_prefix, "after-deep", now)])
    watch.until(
        lambda _: _stored_rows(db, "readings_parking", "after-deep") == 1,
        SENTINEL_S,
        "the reading sent after the deep ones to be stored",
    )
    watch.until(lambda m: _received(m) == len(messages) + 1, 30, "every message handled")
    check_outcomes(db, messages, devices, channels, [KEPT] * len(messages))
    watch.assert_never_down()
