"""Grafana dashboards as code, built from the indicator catalogue.

Run `.venv/bin/python deploy/grafana/generate.py` after changing the catalogue or this
file and commit the JSON it writes to `deploy/grafana/dashboards/`; `--check` exits 1
when the committed JSON differs (tests/deploy/test_grafana_dashboards.py runs it).
Metric names: docs/contracts.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cityvitals.catalogue import BY_ID, CATALOGUE, DISTRICTS, Indicator, Status, Thresholds

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
# The uid of the datasource in provisioning/datasources/prometheus.yml.
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "cityvitals-prometheus"}
# Grafana's dashboard JSON model version the panels are written for (Grafana 11).
SCHEMA_VERSION = 39
TAGS = ["cityvitals"]

Json = dict[str, Any]

DOMAIN_TITLES: dict[str, str] = {
    "parking": "停车 Parking",
    "waste": "垃圾厢房 Waste",
    "energy": "能源 Energy",
    "devices": "设备运行 Devices",
}

# Catalogue units as Grafana unit ids; a unit missing here fails generation, so a new
# unit in the catalogue gets a deliberate choice.
UNITS: dict[str, str] = {
    "ratio": "percentunit",
    "%": "percent",
    "count": "short",
    "per space": "short",
    "kg": "masskg",
    "kW": "kwatt",
    "kWh": "kwatth",
    "t CO2": "suffix: t CO₂",
    "s": "s",
}

STATUS_COLOURS: dict[Status, str] = {
    Status.NORMAL: "green",
    Status.ATTENTION: "yellow",
    Status.WARNING: "orange",
    Status.CRITICAL: "red",
}
STATUS_ZH: dict[Status, str] = {
    Status.NORMAL: "正常",
    Status.ATTENTION: "关注",
    Status.WARNING: "警告",
    Status.CRITICAL: "严重",
}


def grafana_unit(indicator: Indicator) -> str:
    """The Grafana unit of an indicator."""
    try:
        return UNITS[indicator.unit]
    except KeyError:
        raise ValueError(
            f"no Grafana unit for {indicator.unit!r} ({indicator.id}): add it to UNITS"
        ) from None


def status_mappings() -> list[Json]:
    """Value mappings that show a 0-3 status as its name and colour."""
    options = {
        str(int(s)): {"text": f"{STATUS_ZH[s]} {s.label}", "color": STATUS_COLOURS[s], "index": i}
        for i, s in enumerate(Status)
    }
    return [{"type": "value", "options": options}]


def district_mappings() -> list[Json]:
    """Value mappings that show district ids as their bilingual names."""
    options: Json = {"city": {"text": "全市 City", "index": 0}}
    for i, d in enumerate(DISTRICTS, start=1):
        options[d.id] = {"text": f"{d.name_zh} {d.name_en}", "index": i}
    return [{"type": "value", "options": options}]


def threshold_steps(thresholds: Thresholds | None) -> Json:
    """Grafana threshold steps from catalogue thresholds (colours by status)."""
    if thresholds is None:
        return {"mode": "absolute", "steps": [{"color": "text", "value": None}]}
    bounds = [
        (s, b)
        for s in (Status.ATTENTION, Status.WARNING, Status.CRITICAL)
        if (b := thresholds.bound(s)) is not None
    ]
    if thresholds.direction == "ge":
        steps: list[Json] = [{"color": STATUS_COLOURS[Status.NORMAL], "value": None}]
        steps += [{"color": STATUS_COLOURS[s], "value": b} for s, b in bounds]
    else:
        # `lt`: worse below the bound, so the steps run from the worst status upwards.
        ordered = sorted(bounds, key=lambda sb: sb[1])
        steps = [{"color": STATUS_COLOURS[ordered[0][0]], "value": None}]
        for (_, bound), (better, _) in zip(
            ordered, [*ordered[1:], (Status.NORMAL, 0.0)], strict=True
        ):
            steps.append({"color": STATUS_COLOURS[better], "value": bound})
    return {"mode": "absolute", "steps": steps}


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> Json:
    """A Prometheus query of a panel."""
    t: Json = {"datasource": DATASOURCE, "refId": ref, "expr": expr}
    if instant:
        t |= {"instant": True, "range": False, "format": "table"}
    else:
        t |= {"legendFormat": legend or "__auto", "range": True}
    return t


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    w: int,
    h: int,
    unit: str = "short",
    description: str = "",
    defaults: Json | None = None,
    overrides: list[Json] | None = None,
    options: Json | None = None,
    transformations: list[Json] | None = None,
) -> Json:
    """One panel; `gridPos` x/y and `id` are filled in by `layout`."""
    field_defaults: Json = {"unit": unit} | (defaults or {})
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "targets": [t | {"refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def row(title: str) -> Json:
    """A full-width row header."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "panels": [],
    }


def layout(items: Iterable[Json]) -> list[Json]:
    """Place panels left to right, wrapping at Grafana's 24 columns; number them."""
    placed: list[Json] = []
    x = y = line_h = 0
    for pid, item in enumerate(items, start=1):
        pos = item["gridPos"]
        if item["type"] == "row" or x + pos["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        pos["x"], pos["y"] = x, y
        item["id"] = pid
        placed.append(item)
        if item["type"] == "row":
            y += 1
        else:
            x += pos["w"]
            line_h = max(line_h, pos["h"])
    return placed


def dashboard(uid: str, title: str, description: str, panels: Iterable[Json]) -> Json:
    """A dashboard in Grafana's JSON model, provisioned read-only."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "Asia/Shanghai",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {"list": []},
        "templating": {"list": []},
        "links": [],
        "panels": layout(panels),
    }


def _domains() -> list[str]:
    seen: list[str] = []
    for ind in CATALOGUE:
        if ind.domain not in seen:
            seen.append(ind.domain)
    return seen


def _matrix(value_field: str) -> list[Json]:
    """Transformations that turn one row per (district, indicator) into a district table."""
    return [
        {
            "id": "groupingToMatrix",
            "options": {
                "columnField": "indicator",
                "rowField": "district",
                "valueField": value_field,
                "emptyValue": "null",
            },
        },
    ]


def _first_column(name: str) -> Json:
    return {
        "matcher": {"id": "byName", "options": "district\\indicator"},
        "properties": [
            {"id": "displayName", "value": name},
            {"id": "mappings", "value": district_mappings()},
            {"id": "unit", "value": "string"},
            {"id": "custom.cellOptions", "value": {"type": "auto"}},
        ],
    }


def domain_panels(domain: str) -> list[Json]:
    """The values and the statuses of one domain's indicators, one row per district."""
    indicators = [i for i in CATALOGUE if i.domain == domain]
    selector = "|".join(i.id.replace(".", "\\\\.") for i in indicators)
    names = ", ".join(i.id for i in indicators)
    value_overrides = [_first_column("区 District")] + [
        {
            "matcher": {"id": "byName", "options": i.id},
            "properties": [
                {"id": "displayName", "value": f"{i.name_zh} {i.name_en}"},
                {"id": "unit", "value": grafana_unit(i)},
                {"id": "thresholds", "value": threshold_steps(i.thresholds)},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ],
        }
        for i in indicators
    ]
    status_overrides = [_first_column("区 District")] + [
        {
            "matcher": {"id": "byName", "options": i.id},
            "properties": [{"id": "displayName", "value": f"{i.name_zh} {i.name_en}"}],
        }
        for i in indicators
    ]
    title = DOMAIN_TITLES[domain]
    return [
        row(title),
        panel(
            "table",
            f"{title}: values by district",
            [target(f'cityvitals_indicator_value{{indicator=~"{selector}"}}', instant=True)],
            w=14,
            h=11,
            description=(
                f"Latest value of {names} for the city and each district. Colours use the "
                "catalogue's default thresholds; the status table beside it is authoritative."
            ),
            overrides=value_overrides,
            transformations=_matrix("Value"),
            options={"showHeader": True, "cellHeight": "sm"},
        ),
        panel(
            "table",
            f"{title}: status by district",
            [target(f'cityvitals_indicator_status{{indicator=~"{selector}"}}', instant=True)],
            w=10,
            h=11,
            description="Status as the API computes it (thresholds as configured).",
            defaults={
                "mappings": status_mappings(),
                "custom": {"cellOptions": {"type": "color-background"}, "align": "center"},
            },
            overrides=status_overrides,
            transformations=_matrix("Value"),
            options={"showHeader": True, "cellHeight": "sm"},
        ),
    ]


def city_overview() -> Json:
    """Vital signs per district, district statuses and active alerts."""
    online = BY_ID["devices.online_ratio"]
    status_defaults: Json = {"mappings": status_mappings(), "color": {"mode": "thresholds"}}
    panels: list[Json] = [
        row("城市运行生命体征 City vital signs"),
        panel(
            "stat",
            "全市状态 City status",
            [target('cityvitals_district_status{district="city"}', "city")],
            w=6,
            h=5,
            defaults=status_defaults,
            options={"colorMode": "background", "graphMode": "none", "textMode": "value"},
        ),
        panel(
            "stat",
            "活动告警 Active alerts",
            [target("sum by (severity) (cityvitals_alerts_active)", "{{severity}}")],
            w=6,
            h=5,
            options={"colorMode": "value", "graphMode": "none", "textMode": "value_and_name"},
        ),
        panel(
            "stat",
            f"{online.name_zh} {online.name_en}",
            [target(f'cityvitals_indicator_value{{indicator="{online.id}", district="city"}}')],
            w=6,
            h=5,
            unit=grafana_unit(online),
            defaults={"thresholds": threshold_steps(online.thresholds), "decimals": 1},
            options={"colorMode": "value", "graphMode": "area"},
        ),
        panel(
            "stat",
            "数据快照时延 Snapshot age",
            [target("max(cityvitals_snapshot_age_seconds)", "age")],
            w=6,
            h=5,
            unit="s",
            description="Age of the served snapshot; alert CityVitalsSnapshotStale at 30 s.",
            defaults={
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 30}],
                }
            },
            options={"colorMode": "value", "graphMode": "area"},
        ),
        panel(
            "table",
            "各区状态 District status",
            [target('cityvitals_district_status{district!="city"}', instant=True)],
            w=8,
            h=14,
            description="Worst status of each district's indicators.",
            defaults={"custom": {"cellOptions": {"type": "auto"}}},
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "district"},
                    "properties": [
                        {"id": "displayName", "value": "区 District"},
                        {"id": "mappings", "value": district_mappings()},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "Value"},
                    "properties": [
                        {"id": "displayName", "value": "状态 Status"},
                        {"id": "mappings", "value": status_mappings()},
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    ],
                },
            ],
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            "__name__": True,
                            "job": True,
                            "instance": True,
                        },
                        "indexByName": {"district": 0, "Value": 1},
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"field": "Value", "desc": True}]}},
            ],
        ),
        panel(
            "state-timeline",
            "各区状态变化 District status over time",
            [
                target(
                    'max by (district) (cityvitals_district_status{district!="city"})',
                    "{{district}}",
                )
            ],
            w=16,
            h=14,
            defaults={"mappings": status_mappings(), "color": {"mode": "thresholds"}},
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
        ),
        row("活动告警 Active alerts"),
        panel(
            "table",
            "活动告警 Active alerts",
            [target("cityvitals_alert_active == 1", instant=True)],
            w=24,
            h=10,
            description="Per-entity alerts opened by the API (GET /v1/alerts?state=active).",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "district"},
                    "properties": [{"id": "mappings", "value": district_mappings()}],
                },
                {
                    "matcher": {"id": "byName", "options": "severity"},
                    "properties": [
                        {
                            "id": "mappings",
                            "value": [
                                {
                                    "type": "value",
                                    "options": {
                                        s.label: {"color": STATUS_COLOURS[s], "index": i}
                                        for i, s in enumerate(Status)
                                        if s is not Status.NORMAL
                                    },
                                }
                            ],
                        },
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    ],
                },
            ],
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            "Value": True,
                            "__name__": True,
                            "job": True,
                            "instance": True,
                        },
                        "indexByName": {"severity": 0, "indicator": 1, "district": 2, "entity": 3},
                    },
                },
            ],
        ),
    ]
    for domain in _domains():
        panels += domain_panels(domain)
    return dashboard(
        "cityvitals-city-overview",
        "City Vitals · 城市运行生命体征",
        "Vital signs of the city and its districts, generated from the indicator catalogue.",
        panels,
    )


def _timeseries(
    title: str, targets: list[Json], *, unit: str = "short", w: int = 12, description: str = ""
) -> Json:
    return panel(
        "timeseries",
        title,
        targets,
        w=w,
        h=8,
        unit=unit,
        description=description,
        defaults={"custom": {"fillOpacity": 10, "showPoints": "never"}},
        options={
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]}
        },
    )


def _quantiles(metric: str, by: str = "") -> list[Json]:
    extra = f", {by}" if by else ""
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        target(
            f"histogram_quantile({q}, "
            f"sum by (le{extra}) (rate({metric}_bucket[$__rate_interval])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _up_down(title: str, targets: list[Json], down: str, up: str) -> Json:
    return panel(
        "state-timeline",
        title,
        targets,
        w=8,
        h=7,
        defaults={
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        "0": {"text": down, "color": "red", "index": 0},
                        "1": {"text": up, "color": "green", "index": 1},
                    },
                }
            ],
            "color": {"mode": "thresholds"},
        },
        options={"showValue": "auto", "mergeValues": True},
    )


def ingestion_health() -> Json:
    """Throughput, lag, rejects, batches, buffer and connections of the pipeline."""
    rejected = BY_ID["devices.rejected_ratio_10m"]
    lag = BY_ID["devices.ingest_lag_p95_s"]
    rate = "$__rate_interval"
    panels: list[Json] = [
        row("吞吐 Throughput"),
        panel(
            "stat",
            "Messages received /s (all collectors)",
            [target("sum(rate(cityvitals_collector_messages_received_total[1m]))", "received")],
            w=6,
            h=8,
            unit="cps",
            options={"colorMode": "value", "graphMode": "area"},
        ),
        _timeseries(
            "Messages received /s by collector",
            [
                target(
                    "sum by (instance) "
                    f"(rate(cityvitals_collector_messages_received_total[{rate}]))",
                    "{{instance}}",
                )
            ],
            unit="cps",
            w=9,
        ),
        _timeseries(
            "Stored and duplicate rows /s by kind",
            [
                target(
                    f"sum by (kind) (rate(cityvitals_collector_readings_stored_total[{rate}]))",
                    "stored {{kind}}",
                ),
                target(
                    f"sum by (kind) (rate(cityvitals_collector_duplicates_total[{rate}]))",
                    "duplicate {{kind}}",
                ),
            ],
            unit="cps",
            w=9,
            description="Duplicates are re-deliveries absorbed by the unique keys (exactly once).",
        ),
        row("时延 Lag"),
        _timeseries(
            "Receive → acknowledgement",
            _quantiles("cityvitals_collector_ack_lag_seconds"),
            unit="s",
            w=8,
        ),
        _timeseries(
            "Since the last committed batch",
            [target("time() - cityvitals_collector_last_commit_timestamp_seconds", "{{instance}}")],
            unit="s",
            w=8,
            description="Alert CityVitalsIngestStalled when over 120 s while messages wait.",
        ),
        _timeseries(
            f"{lag.name_zh} {lag.name_en}",
            [target(f'cityvitals_indicator_value{{indicator="{lag.id}", district="city"}}', "p95")],
            unit=grafana_unit(lag),
            w=8,
            description="Device timestamp → stored, from the database (indicator " + lag.id + ").",
        ),
        _timeseries(
            "Coverage of the city figures (lowest indicator)",
            [
                target(
                    'min(cityvitals_indicator_coverage_ratio{district="city"})',
                    "coverage",
                )
            ],
            unit="percentunit",
            w=24,
            description="Devices that reported in time ÷ devices that should have.",
        ),
        row("拒收 Rejects"),
        _timeseries(
            "Dead letters /s by reason",
            [
                target(
                    f"sum by (reason) (rate(cityvitals_collector_rejected_total[{rate}]))",
                    "{{reason}}",
                )
            ],
            unit="cps",
            w=12,
        ),
        panel(
            "stat",
            "Rejected share (5 min)",
            [target("cityvitals:collector_rejected_ratio:rate5m", "rejected")],
            w=6,
            h=8,
            unit="percentunit",
            defaults={"thresholds": threshold_steps(rejected.thresholds), "decimals": 2},
            options={"colorMode": "value", "graphMode": "area"},
        ),
        _timeseries(
            "Devices auto-registered /s",
            [
                target(
                    f"sum(rate(cityvitals_collector_devices_autoregistered_total[{rate}]))",
                    "unassigned",
                )
            ],
            unit="cps",
            w=6,
        ),
        row("批次 Batches"),
        _timeseries(
            "Commit duration",
            _quantiles("cityvitals_collector_commit_duration_seconds"),
            unit="s",
            w=8,
        ),
        _timeseries(
            "Batch size (messages)", _quantiles("cityvitals_collector_batch_size_messages"), w=8
        ),
        _timeseries(
            "Buffer: received, not yet acknowledged",
            [target("cityvitals_collector_buffer_messages", "{{instance}}")],
            w=8,
            description="Bounded by the MQTT receive window (CITYVITALS_RECEIVE_MAXIMUM).",
        ),
        row("连接 Connections"),
        _up_down(
            "Database reachable",
            [
                target("cityvitals_collector_database_up", "{{instance}}"),
                target("cityvitals_api_database_up", "{{instance}}"),
            ],
            "down",
            "up",
        ),
        _up_down(
            "Broker connected",
            [target("cityvitals_collector_mqtt_connected", "{{instance}}")],
            "disconnected",
            "connected",
        ),
        _up_down(
            "Scraped by Prometheus",
            [target('up{job=~"cityvitals-.*"}', "{{job}} {{instance}}")],
            "down",
            "up",
        ),
        _timeseries(
            "Reconnections (10 min)",
            [
                target(
                    "sum by (instance, target) "
                    "(increase(cityvitals_collector_reconnects_total[10m]))",
                    "{{instance}} {{target}}",
                )
            ],
            w=24,
        ),
        row("接口 API"),
        _timeseries(
            "Requests /s by route",
            [
                target(
                    "sum by (route) "
                    f"(rate(cityvitals_http_request_duration_seconds_count[{rate}]))",
                    "{{route}}",
                )
            ],
            unit="reqps",
            w=8,
        ),
        _timeseries(
            "p99 latency by route",
            [target("route:cityvitals_http_request_duration_seconds:p99_5m", "{{route}}")],
            unit="s",
            w=8,
        ),
        _timeseries(
            "Snapshot age and refresh time",
            [
                target("cityvitals_snapshot_age_seconds", "age {{instance}}"),
                target(
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(cityvitals_snapshot_refresh_duration_seconds_bucket[{rate}])))",
                    "refresh p95",
                ),
            ],
            unit="s",
            w=8,
        ),
    ]
    return dashboard(
        "cityvitals-ingestion",
        "City Vitals · 数据接入健康 Ingestion health",
        "MQTT → collectors → database: throughput, lag, rejects, batches and connections.",
        panels,
    )


def render() -> dict[str, str]:
    """Every dashboard as the text of its JSON file, by file name."""
    boards = {"city-overview.json": city_overview(), "ingestion-health.json": ingestion_health()}
    return {
        name: json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        for name, board in boards.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with --check say whether the committed ones are current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output folder")
    args = parser.parse_args(argv)
    rendered = render()
    stale = sorted(
        name
        for name, text in rendered.items()
        if not (args.out / name).exists() or (args.out / name).read_text("utf-8") != text
    )
    extra = (
        sorted(p.name for p in args.out.glob("*.json") if p.name not in rendered)
        if args.out.exists()
        else []
    )
    if args.check:
        for name in stale:
            sys.stderr.write(f"{args.out / name} differs from the generator's output\n")
        for name in extra:
            sys.stderr.write(f"{args.out / name} is not made by the generator\n")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
