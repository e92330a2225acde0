"""The JSON documents screens poll, serialized once per snapshot and served as bytes."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from cityvitals.api.compute import Figure, Scope, Site, Snapshot
from cityvitals.catalogue import DISTRICT_BY_ID, DISTRICTS, Indicator, rounded

# gzip level 5: close to level 9's size on JSON at a fraction of the CPU.
GZIP_LEVEL = 5


@dataclass(slots=True)
class Served:
    """One pre-serialized document with its ETag and, once asked for, its gzip form."""

    body: bytes
    etag: str
    _gz: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, doc: Any) -> Served:
        """Serialize a document and give it a strong ETag from its content."""
        body = orjson.dumps(doc)
        return cls(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')

    def gzipped(self) -> bytes:
        """The body gzip-compressed, computed once per document."""
        if self._gz is None:
            self._gz = gzip.compress(self.body, compresslevel=GZIP_LEVEL, mtime=0)
        return self._gz


def iso(ts: datetime) -> str:
    """An RFC 3339 timestamp in UTC with a `Z`."""
    return ts.isoformat().replace("+00:00", "Z")


def figure_doc(
    f: Figure, catalogue: dict[str, Indicator], now: datetime, *, degraded: bool
) -> dict[str, Any]:
    """The API's Indicator object for one figure, every number rounded to its unit's
    precision (the breakdown `by` in the indicator's unit)."""
    ind = catalogue[f.id]
    doc: dict[str, Any] = {
        "id": f.id,
        "name": {"zh": ind.name_zh, "en": ind.name_en},
        "value": ind.served(f.value),
        "unit": ind.unit,
        "status": f.status.label,
        "coverage": rounded(f.coverage, "ratio"),
        "data_age_s": rounded(f.data_age_s(now), "s"),
        # Judged on the unrounded figures, so rounding never hides a short coverage.
        "stale": degraded or f.stale(now),
    }
    if f.by is not None:
        doc["by"] = {k: ind.served(v) for k, v in f.by.items()}
    return doc


def _scope_doc(
    scope: Scope, catalogue: dict[str, Indicator], now: datetime, degraded: bool
) -> dict[str, Any]:
    d = DISTRICT_BY_ID[scope.id]
    return {
        "id": d.id,
        "name": {"zh": d.name_zh, "en": d.name_en},
        "status": scope.status.label,
        "indicators": [figure_doc(f, catalogue, now, degraded=degraded) for f in scope.figures],
    }


def _site_doc(
    site: Site, catalogue: dict[str, Indicator], now: datetime, degraded: bool
) -> dict[str, Any]:
    return {
        "id": site.id,
        "kind": site.kind,
        "name": site.name,
        "status": site.status.label,
        "indicators": [figure_doc(f, catalogue, now, degraded=degraded) for f in site.figures],
    }


def vitals_doc(
    snap: Snapshot, catalogue: dict[str, Indicator], now: datetime, *, degraded: bool
) -> dict[str, Any]:
    """`GET /v1/vitals`: the city and every district."""
    return {
        "generated_at": iso(snap.computed_at),
        "status": snap.city.status.label,
        "stale": degraded,
        "indicators": [figure_doc(f, catalogue, now, degraded=degraded) for f in snap.city.figures],
        "districts": [
            _scope_doc(snap.districts[d.id], catalogue, now, degraded) for d in DISTRICTS
        ],
    }


def district_doc(
    snap: Snapshot,
    district: str,
    sites: Sequence[Site],
    catalogue: dict[str, Indicator],
    now: datetime,
    *,
    degraded: bool,
) -> dict[str, Any]:
    """`GET /v1/vitals/districts/{district}`: one district with its sites."""
    doc = _scope_doc(snap.districts[district], catalogue, now, degraded)
    doc["generated_at"] = iso(snap.computed_at)
    doc["stale"] = degraded
    doc["sites"] = [_site_doc(s, catalogue, now, degraded) for s in sites]
    return doc
