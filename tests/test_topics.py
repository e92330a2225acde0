"""The topic grammar of docs/wire.md (docs/wire.md, Topics): levels, kind, device id, channel,
in that order, and the collector's subscription filter."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cityvitals.reasons import Reason, Rejection
from cityvitals.topics import (
    Channel,
    Kind,
    Topic,
    parse_topic,
    parse_topic_parts,
    subscription,
    topic_for,
)

# The device id grammar, written out here rather than borrowed from the module under test.
ID_FIRST = string.ascii_letters + string.digits
ID_REST = ID_FIRST + "_.-"
ID_GRAMMAR = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

valid_ids = st.from_regex(ID_GRAMMAR, fullmatch=True)
levels = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
prefixes = st.lists(levels, min_size=1, max_size=4).map("/".join)


def is_valid_id(device_id: str) -> bool:
    return (
        1 <= len(device_id) <= 64
        and device_id[0] in ID_FIRST
        and all(c in ID_REST for c in device_id)
    )


def rejected(result: Topic | Rejection, reason: Reason, detail_start: str) -> None:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert result.detail.startswith(detail_start), result.detail


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("channel", list(Channel))
def test_every_kind_and_channel_parses_into_its_parts(kind: Kind, channel: Channel) -> None:
    assert parse_topic(f"city/{kind.value}/p-1/{channel.value}", "city") == Topic(
        kind, "p-1", channel
    )


def test_parsed_kind_and_channel_are_the_enum_members() -> None:
    topic = parse_topic("city/waste/w1/event", "city")
    assert isinstance(topic, Topic)
    assert topic.kind is Kind.WASTE
    assert topic.channel is Channel.EVENT


@pytest.mark.parametrize("prefix", ["a/b/city", "sh/city", "x/y/z/w"])
def test_multi_level_prefix_parses_the_three_levels_after_it(prefix: str) -> None:
    assert parse_topic(f"{prefix}/energy/m1/status", prefix) == Topic(
        Kind.ENERGY, "m1", Channel.STATUS
    )


@pytest.mark.parametrize(
    ("topic", "prefix"),
    [
        ("town/parking/p1/telemetry", "city"),
        ("City/parking/p1/telemetry", "city"),
        ("a/x/city/parking/p1/telemetry", "a/b/city"),
        ("b/a/city/parking/p1/telemetry", "a/b/city"),
        # Right length, but the prefix's levels are not the first ones.
        ("parking/p1/telemetry/x", "city"),
    ],
)
def test_topic_under_another_prefix_is_rejected_as_bad_topic(topic: str, prefix: str) -> None:
    rejected(parse_topic(topic, prefix), Reason.BAD_TOPIC, "topic: expected")


@pytest.mark.parametrize(
    ("topic", "prefix"),
    [
        ("city", "city"),
        ("city/parking", "city"),
        ("city/parking/p1", "city"),
        ("city/parking/p1/telemetry/extra", "city"),
        ("city/parking/p1/telemetry/", "city"),
        ("/city/parking/p1/telemetry", "city"),
        ("city//parking/p1/telemetry", "city"),
        # Only the last level of a multi-level prefix: one level short.
        ("city/parking/p1/telemetry", "a/b/city"),
        # A multi-level prefix's topic read under its last level: two levels too many.
        ("a/b/city/parking/p1/telemetry", "city"),
    ],
)
def test_topic_with_wrong_number_of_levels_is_rejected_as_bad_topic(
    topic: str, prefix: str
) -> None:
    result = parse_topic(topic, prefix)
    rejected(result, Reason.BAD_TOPIC, "topic: expected")
    assert isinstance(result, Rejection)
    assert repr(topic) in result.detail


@pytest.mark.parametrize("kind", ["streetlight", "Parking", "PARKING", "", "parkings", "energy "])
def test_topic_with_unknown_kind_is_rejected_as_unknown_kind(kind: str) -> None:
    result = parse_topic(f"city/{kind}/d1/telemetry", "city")
    assert result == Rejection(
        Reason.UNKNOWN_KIND, f"topic.kind: {kind!r} is not one of parking, waste, energy"
    )


def test_unknown_kind_is_reported_before_a_bad_device_id_or_channel() -> None:
    rejected(
        parse_topic("city/streetlight/-d1/nonsense", "city"), Reason.UNKNOWN_KIND, "topic.kind"
    )


def test_bad_device_id_is_reported_before_a_bad_channel() -> None:
    rejected(parse_topic("city/parking/-d1/nonsense", "city"), Reason.BAD_TOPIC, "topic.device_id")


def test_bad_device_id_detail_is_the_one_dead_letters_document() -> None:
    assert parse_topic("city/parking/-d1/telemetry", "city") == Rejection(
        Reason.BAD_TOPIC, "topic.device_id: '-d1' does not match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    )


@pytest.mark.parametrize("channel", ["telemetrys", "Telemetry", "STATUS", "", "events", "state"])
def test_topic_with_unknown_channel_is_rejected_as_bad_topic(channel: str) -> None:
    assert parse_topic(f"city/energy/m1/{channel}", "city") == Rejection(
        Reason.BAD_TOPIC, f"topic.channel: {channel!r} is not one of telemetry, status, event"
    )


@given(device_id=valid_ids)
def test_any_device_id_of_the_grammar_parses(device_id: str) -> None:
    assert parse_topic(f"city/parking/{device_id}/telemetry", "city") == Topic(
        Kind.PARKING, device_id, Channel.TELEMETRY
    )


@pytest.mark.parametrize(
    "device_id", ["a", "0", "Z", "a" * 64, "9" + "-" * 63, "p_1.x-Y", "A.", "b_"]
)
def test_device_ids_at_the_edges_of_the_grammar_parse(device_id: str) -> None:
    result = parse_topic(f"city/waste/{device_id}/status", "city")
    assert result == Topic(Kind.WASTE, device_id, Channel.STATUS)


@pytest.mark.parametrize(
    "device_id",
    [
        "",
        "-d1",
        "_d1",
        ".d1",
        "a" * 65,
        "p 1",
        "p1\n",
        "\np1",
        "p+1",
        "p#1",
        "p$1",
        "p:1",
        "p1\x00",
        "é1",
        "p\u0661",  # an Arabic-Indic digit is a digit, but not one of the grammar's
        "\uff501",  # a full-width letter
    ],
)
def test_device_ids_breaking_the_grammar_are_rejected_as_bad_topic(device_id: str) -> None:
    rejected(
        parse_topic(f"city/parking/{device_id}/telemetry", "city"),
        Reason.BAD_TOPIC,
        "topic.device_id",
    )


@given(
    first=st.sampled_from("_.-"),
    rest=st.text(alphabet=ID_REST, max_size=63),
)
def test_device_id_starting_with_a_punctuation_mark_is_a_bad_topic(first: str, rest: str) -> None:
    rejected(
        parse_topic(f"city/energy/{first}{rest}/event", "city"),
        Reason.BAD_TOPIC,
        "topic.device_id",
    )


@given(
    first=st.sampled_from(ID_FIRST),
    rest=st.text(alphabet=ID_REST, min_size=64, max_size=200),
)
def test_device_id_longer_than_64_characters_is_a_bad_topic(first: str, rest: str) -> None:
    rejected(
        parse_topic(f"city/energy/{first}{rest}/event", "city"),
        Reason.BAD_TOPIC,
        "topic.device_id",
    )


@given(device_id=st.text(max_size=80).filter(lambda s: not is_valid_id(s)))
def test_any_device_id_outside_the_grammar_is_a_bad_topic(device_id: str) -> None:
    result = parse_topic(f"city/parking/{device_id}/telemetry", "city")
    assert isinstance(result, Rejection), result
    # An id holding a "/" changes the number of levels; either way the topic is not ours.
    assert result.reason is Reason.BAD_TOPIC, result


@given(
    prefix=prefixes,
    kind=st.sampled_from(Kind),
    device_id=valid_ids,
    channel=st.sampled_from(Channel),
)
def test_topic_for_round_trips_through_parse_topic(
    prefix: str, kind: Kind, device_id: str, channel: Channel
) -> None:
    assert parse_topic(topic_for(prefix, kind, device_id, channel), prefix) == Topic(
        kind, device_id, channel
    )


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("channel", list(Channel))
def test_topic_for_spells_enum_members_and_their_strings_alike(
    kind: Kind, channel: Channel
) -> None:
    expected = f"sh/city/{kind.value}/d1/{channel.value}"
    assert topic_for("sh/city", kind, "d1", channel) == expected
    assert topic_for("sh/city", kind.value, "d1", channel.value) == expected


def test_topic_for_another_prefix_does_not_parse_under_ours() -> None:
    topic = topic_for("town", Kind.PARKING, "p1", Channel.TELEMETRY)
    rejected(parse_topic(topic, "city"), Reason.BAD_TOPIC, "topic: expected")


@pytest.mark.parametrize(
    ("prefix", "group", "expected"),
    [
        ("city", None, "city/#"),
        ("city", "", "city/#"),
        ("a/b/city", None, "a/b/city/#"),
        ("city", "cityvitals", "$share/cityvitals/city/#"),
        ("a/b/city", "g1", "$share/g1/a/b/city/#"),
    ],
)
def test_subscription_takes_everything_under_the_prefix_shared_only_with_a_group(
    prefix: str, group: str | None, expected: str
) -> None:
    assert subscription(prefix, group) == expected


@given(
    prefix=prefixes,
    kind=st.sampled_from(Kind),
    device_id=valid_ids,
    channel=st.sampled_from(Channel),
)
def test_subscription_covers_every_device_topic_of_the_prefix(
    prefix: str, kind: Kind, device_id: str, channel: Channel
) -> None:
    plain = subscription(prefix, None)
    assert plain.endswith("/#")
    assert topic_for(prefix, kind, device_id, channel).startswith(plain.removesuffix("#"))
    assert subscription(prefix, "grp") == f"$share/grp/{plain}"


# Levels close to the grammar: right and wrong kinds, ids and channels, empty levels,
# characters a pattern could mistake (".", "+", newline), and other prefixes.
near_levels = st.one_of(
    st.sampled_from([*Kind, *Channel, "", ".", "+", "#", "city", "energy\n", "a/b"]),
    valid_ids,
    st.text(alphabet=ID_REST + "/.+*?$\n ü", max_size=70),
)


@given(
    prefix=st.one_of(prefixes, st.sampled_from(["city", "a.b", "c+d", "x/y"])),
    parts=st.one_of(
        # Three levels, each right or nearly right, and any other number of levels.
        st.tuples(
            st.one_of(st.sampled_from(list(Kind)), near_levels),
            st.one_of(valid_ids, near_levels),
            st.one_of(st.sampled_from(list(Channel)), near_levels),
        ).map(list),
        st.lists(near_levels, max_size=6),
    ),
    lead=st.booleans(),
)
@example(prefix="city", parts=["energy", "ü", "telemetry"], lead=True)
@example(prefix="city", parts=["energy", "a" * 65, "telemetry"], lead=True)
@example(prefix="a.b", parts=["energy", "m", "telemetry"], lead=False)
def test_the_one_pattern_gives_what_the_level_by_level_parse_does(
    prefix: str, parts: list[str], lead: bool
) -> None:
    # Under the prefix, or under one that only a pattern not escaping it would take.
    topic = "/".join([prefix, *parts] if lead else [prefix.replace(".", "X"), *parts])
    assert parse_topic(topic, prefix) == parse_topic_parts(topic, prefix)
