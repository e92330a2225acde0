"""The collector's batch-fed histogram exposes what prometheus-client's would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from cityvitals.collector import metrics

BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _samples(text: str, name: str) -> list[str]:
    return [
        line.replace(name, "m")
        for line in text.splitlines()
        if line.startswith(name) and "_created" not in line
    ]


def test_batch_histogram_matches_prometheus_client() -> None:
    rng = random.Random(7)
    # Values on the bounds, between them and beyond the last: `le` is inclusive.
    values = [*BOUNDS, 0.0, 400.0, *(rng.expovariate(2) for _ in range(500))]
    registry = CollectorRegistry()
    reference = Histogram("ref_seconds", "r", buckets=BOUNDS, registry=registry)
    for v in values:
        reference.observe(v)
    before = _samples(generate_latest().decode(), metrics.ACK_LAG.name)
    metrics.ACK_LAG.observe_many(values[:100])
    metrics.ACK_LAG.observe_many(values[100:])
    after = _samples(generate_latest().decode(), metrics.ACK_LAG.name)
    expected = _samples(generate_latest(registry).decode(), "ref_seconds")

    def minus(a: list[str], b: list[str]) -> list[str]:
        # What this test added to the process-wide histogram, sample by sample.
        out = []
        for x, y in zip(a, b, strict=True):
            key, value = x.rsplit(" ", 1)
            out.append(f"{key} {float(value) - float(y.rsplit(' ', 1)[1])!r}")
        return out

    def rounded(lines: list[str]) -> list[str]:
        return [f"{k} {round(float(v), 9)}" for k, v in (line.rsplit(" ", 1) for line in lines)]

    assert rounded(minus(after, before)) == rounded(expected)
