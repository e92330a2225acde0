"""deploy/prometheus: promtool checks the config and rules and runs their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cityvitals.catalogue import BY_ID, Status

from .promql import PROMETHEUS_DIR, load_yaml, rules

RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def promtool() -> str:
    """The promtool binary; `make test` installs it with Debian's prometheus package."""
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is missing: install Debian's `prometheus` package "
            "(`make test` does: scripts/bootstrap.sh test)"
        )
    return found


def run_promtool(*args: str | Path) -> str:
    """Run promtool, failing the test with its output when it fails."""
    result = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"promtool {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def test_prometheus_config_is_valid() -> None:
    run_promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")


def test_rule_files_are_valid() -> None:
    assert RULE_FILES
    run_promtool("check", "rules", *RULE_FILES)


def test_rule_unit_tests_pass() -> None:
    assert TEST_FILES
    out = run_promtool("test", "rules", *TEST_FILES)
    assert "FAILED" not in out


def test_every_rule_has_a_unit_test() -> None:
    tested_alerts: set[str] = set()
    tested_exprs: set[str] = set()
    for path in TEST_FILES:
        for case in load_yaml(path)["tests"]:
            tested_alerts |= {t["alertname"] for t in case.get("alert_rule_test", [])}
            tested_exprs |= {t["expr"] for t in case.get("promql_expr_test", [])}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    records = {r["record"] for r in rules() if "record" in r}
    assert alerts - tested_alerts == set(), "alerts without a promtool test"
    assert records - tested_exprs == set(), "recording rules without a promtool test"


def test_every_alert_has_severity_and_summary() -> None:
    for rule in (r for r in rules() if "alert" in r):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def _alert_expr(name: str) -> str:
    return str(next(r["expr"] for r in rules() if r.get("alert") == name))


def test_indicator_alert_thresholds_are_the_catalogues() -> None:
    online = BY_ID["devices.online_ratio"].thresholds
    rejected = BY_ID["devices.rejected_ratio_10m"].thresholds
    assert online is not None
    assert rejected is not None
    assert _alert_expr("CityVitalsDevicesOnlineLow").endswith(f"< {online.warning}")
    assert _alert_expr("CityVitalsDeadLetterRateHigh").endswith(f">= {rejected.warning}")
    assert _alert_expr("CityVitalsVitalSignCritical").endswith(f"== {int(Status.CRITICAL)}")
