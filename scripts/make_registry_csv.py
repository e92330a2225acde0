"""A megacity registry as CSV, for `cityvitals devices import` (docs/api.md).

`python -m scripts.make_registry_csv OUT.csv --devices 2000000` writes the docs/targets.md
mix: 60 % parking sensors (40 to a lot), 5 % waste huts, 35 % energy meters (4 to a
building, one in ten a key consumer), spread over the 16 districts. `--bad-rate`
turns that share of rows into rows the import must refuse, one kind of fault each
(see `BAD_KINDS`); the counts written are printed as JSON, so that a test or a
benchmark knows what the report must say.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cityvitals.catalogue import DISTRICTS

HEADER = (
    "device_id",
    "kind",
    "district",
    "site",
    "lat",
    "lon",
    "opening_hours",
    "key_consumer",
    "contract_kw",
)
# docs/targets.md: 1.2 M parking sensors, 100 k huts and 700 k meters in 2 M devices.
MIX = (("parking", 0.60), ("waste", 0.05), ("energy", 0.35))
PER_SITE = {"parking": 40, "waste": 1, "energy": 4}
PREFIX = {"parking": "pk", "waste": "ws", "energy": "em"}
# Each a different reason to refuse a row: validation, or the database (duplicate).
BAD_KINDS = ("district", "lat", "kind", "duplicate", "no_id", "hours_on_parking")


@dataclass
class Written:
    """What a file holds: rows in all, and the bad ones by kind."""

    rows: int = 0
    bad: Counter[str] = field(default_factory=Counter)

    @property
    def good(self) -> int:
        """Rows the import must store."""
        return self.rows - sum(self.bad.values())


def _rows(devices: int, rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """(kind, row) for each device in the mix of docs/targets.md."""
    counts = {kind: int(devices * share) for kind, share in MIX}
    counts["energy"] += devices - sum(counts.values())
    for kind, n in counts.items():
        for i in range(n):
            district = DISTRICTS[i % len(DISTRICTS)]
            site = f"{district.id}-{(i // len(DISTRICTS)) // PER_SITE[kind]:05d}"
            # Four decimals: about 10 m, as a surveyed registry has them.
            lat = f"{30.7 + rng.random() * 1.2:.4f}"
            lon = f"{120.9 + rng.random() * 1.0:.4f}"
            hours = key = contract = ""
            if kind == "waste" and i % 3 == 0:
                hours = "07:00-09:00;18:00-20:30"
            if kind == "energy":
                key = "true" if i % 10 == 0 else ""
                contract = str(rng.choice((200, 400, 800, 2500)))
            yield (
                kind,
                [
                    f"{PREFIX[kind]}-{i:07d}",
                    kind,
                    district.id,
                    site,
                    lat,
                    lon,
                    hours,
                    key,
                    contract,
                ],
            )


def write(out: TextIO, devices: int, *, bad_rate: float = 0.0, seed: int = 1) -> Written:
    """Write the header and `devices` rows; what was written."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    written = Written()
    first_id: str | None = None
    for kind, row in _rows(devices, rng):
        if bad_rate and rng.random() < bad_rate:
            fault = BAD_KINDS[written.rows % len(BAD_KINDS)]
            if (fault == "hours_on_parking" and kind != "parking") or (
                fault == "duplicate" and first_id is None
            ):
                fault = "district"
            written.bad[fault] += 1
            match fault:
                case "district":
                    row[2] = "atlantis"
                case "lat":
                    row[4] = "95.0"
                case "kind":
                    row[1] = "tram"
                case "duplicate":
                    row[0] = first_id or row[0]
                case "no_id":
                    row[0] = ""
                case "hours_on_parking":
                    row[6] = "07:00-09:00"
        elif first_id is None:
            first_id = row[0]
        writer.writerow(row)
        written.rows += 1
    return written


def main(argv: list[str] | None = None) -> int:
    """Write the file; print what it holds as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=2_000_000)
    parser.add_argument("--bad-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with args.out.open("w", encoding="utf-8", newline="") as out:
        written = write(out, args.devices, bad_rate=args.bad_rate, seed=args.seed)
    summary = {
        "rows": written.rows,
        "good": written.good,
        "bad": dict(written.bad),
        "bytes": args.out.stat().st_size,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
