"""Reading the rules and dashboards under deploy/ and the metric names they query."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
CONTRACTS = ROOT / "docs" / "contracts.md"

# Series Prometheus makes itself rather than scraping them from our services.
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
        "unless", "bool", "offset", "inf", "nan", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = _VARIABLES.sub("1m", _STRING.sub('""', expr))
    text = _LABEL_LISTS.sub(" ", _RANGES.sub("", _MATCHERS.sub("", text)))
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def load_yaml(path: Path) -> Any:
    """A YAML file's content."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule under deploy/prometheus/rules."""
    found: list[dict[str, Any]] = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            found += group["rules"]
    return found


def recorded_names() -> set[str]:
    """The series the recording rules create."""
    return {r["record"] for r in rules() if "record" in r}


def _walk_exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        here = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return here + [e for v in node.values() for e in _walk_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _walk_exprs(v)]
    return []


def dashboard_exprs() -> dict[str, list[str]]:
    """The PromQL of every panel, by committed dashboard file."""
    return {
        path.name: _walk_exprs(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    }


def all_queries() -> dict[str, str]:
    """Every PromQL expression under deploy/, keyed by where it is."""
    queries = {f"rule {r.get('record') or r.get('alert')}": r["expr"] for r in rules()}
    for name, exprs in dashboard_exprs().items():
        for i, expr in enumerate(exprs):
            queries[f"{name} query {i}"] = expr
    return queries


def contract_metrics() -> dict[str, str]:
    """Metric names and types from the tables of docs/contracts.md."""
    found: dict[str, str] = {}
    for line in CONTRACTS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`(cityvitals_\w+)`\s*\|\s*(\w+)\s*\|", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def series_names(metrics: dict[str, str]) -> set[str]:
    """The series names a set of metric families exposes (histograms add suffixes)."""
    names: set[str] = set()
    for name, kind in metrics.items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    return names


def load_generator() -> ModuleType:
    """deploy/grafana/generate.py as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "cityvitals_grafana_generate", GRAFANA_DIR / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
