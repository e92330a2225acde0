"""Every metric a rule or panel queries is one the services export."""

from __future__ import annotations

import pytest

from .conftest import RunningServices
from .promql import (
    PROMETHEUS_BUILTINS,
    all_queries,
    contract_metrics,
    metric_names,
    recorded_names,
    series_names,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('sum by (reason) (rate(a_total{reason="x"}[5m])) / b', {"a_total", "b"}),
        ("time() - c > 120 and on (job, instance) d > 0", {"c", "d"}),
        ("histogram_quantile(0.9, sum by (le) (rate(e_bucket[$__rate_interval])))", {"e_bucket"}),
        ('f{indicator=~"parking\\\\.a|b"} < 0.9', {"f"}),
        ("lvl:g:rate5m >= 1e-3", {"lvl:g:rate5m"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_queried_metric_is_in_the_contract() -> None:
    known = series_names(contract_metrics()) | recorded_names() | PROMETHEUS_BUILTINS
    unknown = {
        where: sorted(metric_names(expr) - known)
        for where, expr in all_queries().items()
        if metric_names(expr) - known
    }
    assert unknown == {}, "queries name metrics docs/contracts.md does not list"


def test_every_contract_metric_is_used_somewhere() -> None:
    used = set().union(*(metric_names(e) for e in all_queries().values()))
    # A panel or rule per metric, so nothing exported goes unwatched.
    unused = {
        name
        for name in contract_metrics()
        if not series_names({name: contract_metrics()[name]}) & used
    }
    assert unused == set(), sorted(unused)


def test_every_queried_metric_is_served_by_the_running_services(
    running_services: RunningServices,
) -> None:
    served = series_names(running_services.metric_families())
    queried = set().union(*(metric_names(e) for e in all_queries().values()))
    missing = queried - served - recorded_names() - PROMETHEUS_BUILTINS
    assert missing == set(), "metrics queried under deploy/ that no running service serves"
