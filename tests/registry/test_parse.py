"""Registry files read in pieces: the rows do not depend on where the pieces break."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityvitals.registry.models import ImportFailure
from cityvitals.registry.parse import (
    STAGING_COLUMNS,
    CsvReader,
    JsonReader,
    RawRow,
    check,
    format_for_content_type,
    format_for_file,
)


def read_all(reader: CsvReader | JsonReader, data: bytes, cuts: list[int]) -> list[RawRow]:
    """Feed `data` broken at `cuts`, then close."""
    rows: list[RawRow] = []
    start = 0
    for cut in sorted(cuts):
        rows += reader.feed(data[start:cut])
        start = cut
    rows += reader.feed(data[start:])
    return rows + reader.close()


def reference(text: str) -> list[RawRow]:
    """What the import read before it streamed: `csv.DictReader` over the whole text."""
    out: list[RawRow] = []
    for number, rec in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=1):
        extra = rec.pop(None, None)
        row = {k.strip(): v.strip() for k, v in rec.items() if v is not None and v.strip()}
        if extra:
            row["__extra__"] = extra
        out.append((number, row))
    return out


cell = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12
) | st.sampled_from(["", "a,b", 'say "hi"', "two\nlines", "crlf\r\nx", "汇"])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(cell, min_size=3, max_size=4), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_csv_rows_are_the_same_wherever_the_pieces_break(
    rows: list[list[str]], cuts: list[int], crlf: bool, bom: bool
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["device_id", "kind", "site"])
    writer.writerows(rows)
    text = out.getvalue()
    data = ("\ufeff" if bom else "").encode() + text.encode()
    cuts = [c for c in cuts if c <= len(data)]
    assert read_all(CsvReader(), data, cuts) == reference(text)


def test_csv_values_are_stripped_and_typed_like_the_registry_fields() -> None:
    data = (
        b"device_id, kind ,opening_hours,key_consumer,site\n"
        b" hut-1 ,waste, 07:00-09:00; 18:30-20:30 ,,\n"
        b"em-1,energy,,YES,Tower\n"
        b"\n"
        b"em-2,energy,,maybe,,extra\n"
    )
    assert read_all(CsvReader(), data, [7, 40]) == [
        (
            1,
            {
                "device_id": "hut-1",
                "kind": "waste",
                "opening_hours": [
                    {"open": "07:00", "close": "09:00"},
                    {"open": "18:30", "close": "20:30"},
                ],
            },
        ),
        (2, {"device_id": "em-1", "kind": "energy", "key_consumer": True, "site": "Tower"}),
        (
            3,
            {
                "device_id": "em-2",
                "kind": "energy",
                "key_consumer": "maybe",
                "__extra__": ["extra"],
            },
        ),
    ]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"id,kind\nx,parking\n"])
def test_csv_without_a_device_id_header_is_unreadable(data: bytes) -> None:
    with pytest.raises(ValueError, match="device_id"):
        read_all(CsvReader(), data, [])


def test_csv_that_is_not_utf8_is_unreadable() -> None:
    with pytest.raises(UnicodeDecodeError):
        read_all(CsvReader(), b"device_id,kind\nx\xff,parking\n", [])


def test_json_arrays_and_wrapped_arrays_number_their_items() -> None:
    items: list[Any] = [{"device_id": "a", "kind": "parking"}, 7]
    for doc in (items, {"devices": items}):
        data = orjson.dumps(doc)
        assert read_all(JsonReader(), data, [3, 9]) == [
            (1, {"device_id": "a", "kind": "parking"}),
            (2, {"__not_an_object__": 7}),
        ]


@pytest.mark.parametrize("data", [b"[{", b'{"nodevices": 1}', b'"x"', b""])
def test_json_that_is_not_an_array_of_devices_is_unreadable(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's and ours, each its own text
        read_all(JsonReader(), data, [])


def test_check_names_each_wrong_field_and_keeps_the_device_id() -> None:
    bad = check(4, {"device_id": "p-1", "kind": "parking", "district": "atlantis", "lat": "95"})
    assert isinstance(bad, ImportFailure)
    assert bad.row == 4
    assert bad.device_id == "p-1"
    assert [e.split(":")[0] for e in bad.errors] == ["district", "lat"]
    assert check(5, {"kind": "parking"}) == ImportFailure(
        row=5, device_id=None, errors=["device_id: required"]
    )
    nul = check(6, {"device_id": "p-2", "kind": "parking", "site": "a\x00b"})
    assert isinstance(nul, ImportFailure)
    assert nul.errors[0].startswith("site:")


def test_check_gives_a_staging_row_in_column_order() -> None:
    row = check(2, {"device_id": "w-1", "kind": "waste", "opening_hours": [["07:00", "09:00"]]})
    assert not isinstance(row, ImportFailure)
    assert row[:3] == (2, "w-1", "waste")
    hours = row[STAGING_COLUMNS.index("opening_hours")]
    assert hours.obj == [{"open": "07:00", "close": "09:00"}]


def test_formats_by_content_type_and_by_file() -> None:
    assert format_for_content_type("text/csv; charset=utf-8") == "csv"
    assert format_for_content_type("application/vnd.x+json") == "json"
    assert format_for_content_type("application/xml") is None
    assert format_for_file(Path("fleet.JSON"), b"") == "json"
    assert format_for_file(Path("fleet.txt"), b"  [{") == "json"
    assert format_for_file(Path("fleet.txt"), b"device_id,kind") == "csv"
