"""Registry files (CSV or JSON) read in pieces, and each row checked against `DeviceIn`.

Nothing here touches the database: the readers turn bytes into numbered raw rows, and
`check` turns a raw row into the row `service` copies into the database, or into the
failure the import reports. Duplicate ids are found by the database, after the copy,
so that memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from cityvitals.db.schema import REGISTRY_FIELDS
from cityvitals.registry.models import DeviceIn, ImportFailure

Format = Literal["csv", "json"]
RawRow = tuple[int, dict[str, Any]]
# One row of the import's staging table: the file's row number, then REGISTRY_FIELDS.
CopyRow = tuple[Any, ...]
_TRUE = frozenset(("true", "1", "yes", "y", "t"))
_FALSE = frozenset(("false", "0", "no", "n", "f"))


class Reader(Protocol):
    """Turns a file fed in pieces into numbered raw rows."""

    def feed(self, data: bytes) -> list[RawRow]:
        """The rows completed by `data`."""
        ...

    def close(self) -> list[RawRow]:
        """The rows left at the end of the file; ValueError when it was not readable."""
        ...


def format_for_content_type(content_type: str) -> Format | None:
    """`csv` or `json` for a request's Content-Type, None for anything else."""
    media = content_type.split(";")[0].strip().lower()
    if media in ("text/csv", "application/csv", "text/plain"):
        return "csv"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    return None


def format_for_file(path: Path, head: bytes) -> Format:
    """JSON when the file ends in .json or starts with `[` or `{`; else CSV."""
    if path.suffix.lower() == ".json" or head.lstrip()[:1] in (b"[", b"{"):
        return "json"
    return "csv"


def reader_for(fmt: Format) -> Reader:
    """A fresh reader for one file."""
    return CsvReader() if fmt == "csv" else JsonReader()


def _opening_hours(raw: str) -> list[dict[str, str]]:
    # `07:00-09:00;18:00-20:00`
    windows = []
    for part in raw.split(";"):
        open_, _, close = part.strip().partition("-")
        windows.append({"open": open_.strip(), "close": close.strip()})
    return windows


def _flag(raw: str) -> bool | str:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return raw  # for DeviceIn to refuse, naming the field


def _record_end(text: str) -> int:
    """Where the last complete record of `text` ends (0: none yet).

    A line break ends a record unless it stands inside a quoted field, that is after
    an odd number of quotes (an escaped quote is two). A stray quote in an unquoted
    field, which `csv` takes as a character, only makes the reader wait for a later
    break to cut at.
    """
    quotes = text.count('"')
    end = len(text)
    while True:
        cut = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end))
        if cut < 0:
            return 0
        quotes -= text.count('"', cut + 1, end)
        if quotes % 2 == 0:
            return cut + 1
        end = cut


@dataclass
class CsvReader:
    """CSV with a header row naming registry fields (`device_id` required).

    Empty cells are absent fields; `opening_hours` is `07:00-09:00;18:00-20:00`;
    rows are numbered from 1 after the header, blank lines not counted. Memory holds
    one piece of the file and the record that spans it, never the whole file.
    """

    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8-sig")()
    )
    _tail: str = ""
    _header: list[str] | None = None
    _number: int = 0

    def feed(self, data: bytes) -> list[RawRow]:
        """The rows completed by `data` (UnicodeDecodeError for bytes not UTF-8)."""
        text = self._tail + self._decoder.decode(data)
        cut = _record_end(text)
        self._tail = text[cut:]
        return self._rows(text[:cut]) if cut else []

    def close(self) -> list[RawRow]:
        """The last rows; ValueError for a file without a header naming device_id."""
        text = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        rows = self._rows(text) if text else []
        if self._header is None:
            raise ValueError("CSV header must name the columns and include device_id")
        return rows

    def _rows(self, text: str) -> list[RawRow]:
        records = csv.reader(io.StringIO(text, newline=""))
        header = self._header
        if header is None:
            first = next(records, None)
            while first == []:
                first = next(records, None)
            if first is None:
                return []
            header = [name.strip() for name in first]
            if "device_id" not in header:
                raise ValueError("CSV header must name the columns and include device_id")
            self._header = header
        width = len(header)
        hours = "opening_hours" in header
        key = "key_consumer" in header
        out: list[RawRow] = []
        number = self._number
        for values in records:
            if not values:
                continue
            number += 1
            row: dict[str, Any] = {
                name: value
                for name, value in zip(header, map(str.strip, values), strict=False)
                if value
            }
            if hours and "opening_hours" in row:
                row["opening_hours"] = _opening_hours(row["opening_hours"])
            if key and "key_consumer" in row:
                row["key_consumer"] = _flag(row["key_consumer"])
            if len(values) > width:
                row["__extra__"] = values[width:]
            out.append((number, row))
        self._number = number
        return out


@dataclass
class JsonReader:
    """A JSON array of device objects, or `{"devices": [...]}`.

    No JSON parser in our dependencies reads an array element by element, so the
    document is held whole until the end: its size is bounded by whoever feeds it
    (the API's body limit). CSV is the format for a megacity's registry.
    """

    _body: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[RawRow]:
        """Keep the piece; the rows come at the end."""
        self._body += data
        return []

    def close(self) -> list[RawRow]:
        """Every row; ValueError for JSON that is not an array of devices."""
        data = orjson.loads(self._body)
        self._body = bytearray()
        if isinstance(data, dict) and isinstance(data.get("devices"), list):
            data = data["devices"]
        if not isinstance(data, list):
            raise ValueError('expected a JSON array of devices or {"devices": [...]}')
        return records(data)


def records(items: Iterable[object]) -> list[RawRow]:
    """Device objects already in memory, numbered from 1 (anything else fails its row)."""
    return [
        (number, dict(item) if isinstance(item, Mapping) else {"__not_an_object__": item})
        for number, item in enumerate(items, start=1)
    ]


def _error_text(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors(include_url=False, include_context=False):
        loc = ".".join(str(p) for p in e["loc"]) or "row"
        out.append(f"{loc}: {e['msg']}")
    return out


_FIELDS = operator.attrgetter(*REGISTRY_FIELDS)
_HOURS_AT = REGISTRY_FIELDS.index("opening_hours")


def registry_values(dev: DeviceIn) -> list[Any]:
    """A validated device as the database takes it, in `REGISTRY_FIELDS` order."""
    values = list(_FIELDS(dev))
    hours = dev.opening_hours
    if hours is not None:
        values[_HOURS_AT] = Jsonb([{"open": w.open, "close": w.close} for w in hours])
    return values


def copy_row(number: int, dev: DeviceIn) -> CopyRow:
    """A validated device as a row of the staging table (`STAGING_COLUMNS` order)."""
    return (number, *registry_values(dev))


# The staging table's columns: `copy_row` fills them in this order.
STAGING_COLUMNS = ("row_no", *REGISTRY_FIELDS)


def check(number: int, raw: Mapping[str, Any]) -> CopyRow | ImportFailure:
    """A raw row as a staging row, or the failure that names its errors."""
    device_id = raw.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        return ImportFailure(row=number, device_id=None, errors=["device_id: required"])
    try:
        dev = DeviceIn.model_validate(raw)
    except ValidationError as err:
        return ImportFailure(row=number, device_id=device_id, errors=_error_text(err))
    return copy_row(number, dev)


@dataclass
class Checked:
    """One piece of a file, checked: staging rows and the rows that failed."""

    rows: list[CopyRow] = field(default_factory=list)
    failed: list[ImportFailure] = field(default_factory=list)


def check_all(rows: Iterable[RawRow]) -> Checked:
    """`check` over a piece of a file."""
    out = Checked()
    for number, raw in rows:
        result = check(number, raw)
        if isinstance(result, ImportFailure):
            out.failed.append(result)
        else:
            out.rows.append(result)
    return out
