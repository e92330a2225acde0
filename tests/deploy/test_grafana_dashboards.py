"""deploy/grafana: dashboards generated from the catalogue, committed as generated."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from cityvitals.catalogue import CATALOGUE, DISTRICTS, Status

from .promql import GRAFANA_DIR, load_generator, load_yaml


def _boards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    }


def _panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, board in _boards().items():
        for panel in board["panels"]:
            yield f"{name}: {panel.get('title')}", panel


def _lost(written: Any, read: Any, path: str = "") -> list[str]:
    """Where `read` lacks or changes something of `written` (additions are fine)."""
    if isinstance(written, dict) and isinstance(read, dict):
        return [
            lost
            for key, value in written.items()
            for lost in (
                _lost(value, read[key], f"{path}.{key}") if key in read else [f"{path}.{key}"]
            )
        ]
    if isinstance(written, list) and isinstance(read, list) and len(written) == len(read):
        return [
            lost
            for i, (w, r) in enumerate(zip(written, read, strict=True))
            for lost in _lost(w, r, f"{path}[{i}]")
        ]
    return [] if written == read else [path]


def test_committed_dashboards_are_the_generators_output() -> None:
    result = subprocess.run(
        [sys.executable, str(GRAFANA_DIR / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        "deploy/grafana/dashboards differs from the generator (hand edit or stale "
        f"generation); run `.venv/bin/python deploy/grafana/generate.py`:\n{result.stderr}"
    )


def test_check_mode_fails_on_a_hand_edit_and_on_a_stray_file(tmp_path: Path) -> None:
    generator = load_generator()
    assert generator.main(["--out", str(tmp_path)]) == 0
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0
    board = tmp_path / "city-overview.json"
    original = board.read_text(encoding="utf-8")
    board.write_text(original.replace('"30s"', '"5s"', 1), encoding="utf-8")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1
    board.write_text(original, encoding="utf-8")
    shutil.copy(board, tmp_path / "hand-made.json")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1
    (tmp_path / "hand-made.json").unlink()
    (tmp_path / "ingestion-health.json").unlink()
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1


def test_generator_is_deterministic() -> None:
    generator = load_generator()
    assert generator.render() == generator.render()


def test_city_overview_covers_every_indicator_and_district() -> None:
    text = (GRAFANA_DIR / "dashboards" / "city-overview.json").read_text(encoding="utf-8")
    for indicator in CATALOGUE:
        assert f'"{indicator.id}"' in text, f"{indicator.id} has no column"
        assert indicator.name_zh in text
    for district in DISTRICTS:
        assert district.name_zh in text


def test_one_values_panel_per_domain() -> None:
    board = _boards()["city-overview.json"]
    titles = [p["title"] for p in board["panels"]]
    domains = {i.domain for i in CATALOGUE}
    values = [t for t in titles if t.endswith(": values by district")]
    assert len(values) == len(domains)


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    for name, board in _boards().items():
        panels: list[dict[str, Any]] = board["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for p in panels:
            if p["type"] != "row":
                assert p["datasource"]["uid"] == uid, name
                refs = [t["refId"] for t in p["targets"]]
                assert all(refs), f"{name}: panel {p['id']} has a query without refId"
                assert len(refs) == len(set(refs)), f"{name}: panel {p['id']} repeats a refId"
                assert {t["datasource"]["uid"] for t in p["targets"]} == {uid}, name
            pos = p["gridPos"]
            assert pos["x"] + pos["w"] <= 24, name
            taken = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not taken & cells, f"{name}: panel {p['id']} overlaps another"
            cells |= taken


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "cityvitals.yml")
    compose = load_yaml(GRAFANA_DIR.parents[1] / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    path = providers["providers"][0]["options"]["path"]
    assert any(str(m).endswith(f":{path}:ro") for m in mounts), mounts


def test_value_columns_colour_by_the_catalogue_thresholds() -> None:
    columns = {
        o["matcher"]["options"]: {prop["id"]: prop.get("value") for prop in o["properties"]}
        for _, p in _panels()
        if p["title"].endswith(": values by district")
        for o in p["fieldConfig"]["overrides"]
    }
    for indicator in CATALOGUE:
        assert indicator.id in columns, f"{indicator.id} has no value column"
        steps = columns[indicator.id]["thresholds"]["steps"]
        assert steps[0]["value"] is None, indicator.id
        bounds = [s["value"] for s in steps[1:]]
        assert bounds == sorted(bounds), f"{indicator.id}: Grafana needs ascending steps"
        expected = (
            set()
            if indicator.thresholds is None
            else {
                b
                for s in (Status.ATTENTION, Status.WARNING, Status.CRITICAL)
                if (b := indicator.thresholds.bound(s)) is not None
            }
        )
        assert set(bounds) == expected, indicator.id


def test_legends_show_and_stats_reduce_to_the_last_value() -> None:
    # The SDK's defaults hide legends and leave the stat reducer empty; Grafana's don't.
    for where, panel in _panels():
        legend = panel.get("options", {}).get("legend")
        if legend is not None:
            assert legend["showLegend"] is True, where
        if panel["type"] == "stat":
            assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], where


def test_dashboards_declare_the_grafana_11_schema() -> None:
    assert {b["schemaVersion"] for b in _boards().values()} == {39}


def test_every_field_written_is_one_grafanas_schema_knows() -> None:
    # Reading a dashboard into the SDK's models (Grafana's schema, per panel type) drops
    # what the schema does not know, so a misspelt or stray option shows up here.
    register_default_plugins()
    for name, board in _boards().items():
        read = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
        assert _lost(board, read) == [], name
