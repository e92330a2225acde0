"""deploy/grafana: dashboards generated from the catalogue, committed as generated."""

from __future__ import annotations

import json
import subprocess
import sys

from cityvitals.catalogue import CATALOGUE, DISTRICTS

from .promql import GRAFANA_DIR, load_generator, load_yaml


def _boards() -> dict[str, dict[str, object]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    }


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
    titles = [p["title"] for p in board["panels"]]  # type: ignore[attr-defined]
    domains = {i.domain for i in CATALOGUE}
    values = [t for t in titles if t.endswith(": values by district")]
    assert len(values) == len(domains)


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    for name, board in _boards().items():
        panels: list[dict[str, dict[str, int]]] = board["panels"]  # type: ignore[assignment]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for p in panels:
            if "datasource" in p:
                assert p["datasource"]["uid"] == uid, name
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
