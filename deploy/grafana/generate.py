"""Grafana dashboards as code: built from the indicator catalogue with Grafana's own SDK.

Run `.venv/bin/python deploy/grafana/generate.py` after changing the catalogue or this
file and commit the JSON it writes to `deploy/grafana/dashboards/`; `--check` exits 1
when the committed JSON differs (tests/deploy/test_grafana_dashboards.py runs it).
Metric names: docs/contracts.md. The SDK (`grafana-foundation-sdk`) is a dev dependency:
nothing the services run imports this file.

The SDK's dashboard builder lays the panels out left to right and starts a new line
once 24 columns are full and at each row header; it does not wrap a panel that does not
fit, so the widths of a line add up to 24 at most (the tests check for overlaps).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from cityvitals.catalogue import BY_ID, CATALOGUE, DISTRICTS, Domain, Indicator, Status, Thresholds

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
# The uid of the datasource in provisioning/datasources/prometheus.yml.
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="cityvitals-prometheus")
# The JSON model version the panels are written for: Grafana 11 (docker-compose.yml runs
# 11.3; tables use `cellOptions`). The SDK's models are Grafana 10.1's and say 36, which
# would have Grafana run its 10.x migrations over panels already in the 11 shape.
SCHEMA_VERSION = 39
TAGS = ["cityvitals"]

Item = Builder[dm.Panel] | db.Row
P = TypeVar("P", stat.Panel, table.Panel, timeseries.Panel, statetimeline.Panel)

DOMAIN_TITLES: dict[Domain, str] = {
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


def status_mappings() -> list[dm.ValueMapping]:
    """Value mappings that show a 0-3 status as its name and colour."""
    options = {
        str(int(s)): dm.ValueMappingResult(
            text=f"{STATUS_ZH[s]} {s.label}", color=STATUS_COLOURS[s], index=i
        )
        for i, s in enumerate(Status)
    }
    return [dm.ValueMap(options=options)]


def district_mappings() -> list[dm.ValueMapping]:
    """Value mappings that show district ids as their bilingual names."""
    options = {"city": dm.ValueMappingResult(text="全市 City", index=0)}
    for i, d in enumerate(DISTRICTS, start=1):
        options[d.id] = dm.ValueMappingResult(text=f"{d.name_zh} {d.name_en}", index=i)
    return [dm.ValueMap(options=options)]


def threshold_steps(thresholds: Thresholds | None) -> db.ThresholdsConfig:
    """Grafana threshold steps from catalogue thresholds (colours by status)."""
    steps: list[dm.Threshold]
    if thresholds is None:
        steps = [dm.Threshold(value=None, color="text")]
    else:
        bounds = [
            (s, b)
            for s in (Status.ATTENTION, Status.WARNING, Status.CRITICAL)
            if (b := thresholds.bound(s)) is not None
        ]
        if thresholds.direction == "ge":
            steps = [dm.Threshold(value=None, color=STATUS_COLOURS[Status.NORMAL])]
            steps += [dm.Threshold(value=b, color=STATUS_COLOURS[s]) for s, b in bounds]
        else:
            # `lt`: worse below the bound, so the steps run from the worst status upwards.
            ordered = sorted(bounds, key=lambda sb: sb[1])
            steps = [dm.Threshold(value=None, color=STATUS_COLOURS[ordered[0][0]])]
            for (_, bound), (better, _) in zip(
                ordered, [*ordered[1:], (Status.NORMAL, 0.0)], strict=True
            ):
                steps.append(dm.Threshold(value=bound, color=STATUS_COLOURS[better]))
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


def _by_thresholds() -> db.FieldColor:
    return db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS)


def _prop(id_: str, value: object) -> dm.DynamicConfigValue:
    """One property of a field override."""
    return dm.DynamicConfigValue(id_val=id_, value=value)


def _transform(id_: str, options: dict[str, object]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val=id_, options=options)


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus query of a panel; `_panel` gives it its refId."""
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if instant:
        return q.instant().format(PromQueryFormat.TABLE)
    return q.range().legend_format(legend or "__auto")


def _panel(
    panel: P,
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    w: int,
    h: int,
    unit: str = "short",
    description: str = "",
) -> P:
    """What every panel has: title, size, unit, and its queries on the provisioned datasource."""
    targets: list[Builder[Dataquery]] = [q.ref_id(chr(ord("A") + i)) for i, q in enumerate(queries)]
    panel = panel.title(title).datasource(DATASOURCE).span(w).height(h).unit(unit)
    panel = panel.targets(targets)
    return panel.description(description) if description else panel


def _legend(
    display: cm.LegendDisplayMode = cm.LegendDisplayMode.LIST,
    placement: cm.LegendPlacement = cm.LegendPlacement.BOTTOM,
    calcs: list[str] | None = None,
) -> cb.VizLegendOptions:
    # The SDK's legend is hidden unless told (showLegend false); Grafana's default shows it.
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(display)
        .placement(placement)
        .calcs(calcs or [])
    )


def _tooltip() -> cb.VizTooltipOptions:
    # Grafana's default: one series, in query order (the SDK's default sorts ascending).
    return cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE).sort(cm.SortOrder.NONE)


def _stat(
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    color: cm.BigValueColorMode,
    graph: cm.BigValueGraphMode,
    w: int,
    h: int,
    unit: str = "short",
    description: str = "",
) -> stat.Panel:
    # Grafana's default reducer, spelt out: the SDK writes an empty list, which Grafana
    # keeps (and then shows the last value, null or not).
    last = cb.ReduceDataOptions().values(False).calcs(["lastNotNull"])
    return (
        _panel(stat.Panel(), title, queries, w=w, h=h, unit=unit, description=description)
        .color_mode(color)
        .graph_mode(graph)
        .reduce_options(last)
    )


def _table(
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    w: int,
    h: int,
    description: str = "",
    custom: cm.TableFieldOptions | None = None,
) -> table.Panel:
    panel = _panel(table.Panel(), title, queries, w=w, h=h, description=description)
    if custom is not None:
        # The SDK's table builder (Grafana 10.1) has no setter for the table's field
        # defaults; `build()` hands back the panel being built, so set them on it.
        panel.build().field_config.defaults.custom = custom
    return panel.show_header(True).cell_height(cm.TableCellHeight.SM)


def _timeseries(
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    unit: str = "short",
    w: int = 12,
    description: str = "",
) -> timeseries.Panel:
    return (
        _panel(timeseries.Panel(), title, queries, w=w, h=8, unit=unit, description=description)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(_legend(cm.LegendDisplayMode.TABLE, cm.LegendPlacement.RIGHT, ["lastNotNull"]))
        .tooltip(_tooltip())
    )


def _timeline(
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    mappings: list[dm.ValueMapping],
    show_value: cm.VisibilityMode,
    w: int,
    h: int,
) -> statetimeline.Panel:
    return (
        _panel(statetimeline.Panel(), title, queries, w=w, h=h)
        .mappings(mappings)
        .color_scheme(_by_thresholds())
        .show_value(show_value)
        .merge_values(True)
        .legend(_legend())
        .tooltip(_tooltip())
    )


def dashboard(uid: str, title: str, description: str, items: Iterable[Item]) -> dm.Dashboard:
    """A dashboard in Grafana's JSON model, provisioned read-only, its panels numbered."""
    builder = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(list(TAGS))
        .timezone("Asia/Shanghai")
        .readonly()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .version(1)
        .annotations([])
        .variables([])
        .links([])
    )
    for item in items:
        if isinstance(item, db.Row):
            builder.with_row(item)
        else:
            builder.with_panel(item)
    board = builder.build()
    board.schema_version = SCHEMA_VERSION
    for pid, panel in enumerate(board.panels or [], start=1):
        panel.id_val = pid
    return board


def _matrix() -> dm.DataTransformerConfig:
    """One row per (district, indicator) turned into a table of districts."""
    return _transform(
        "groupingToMatrix",
        {
            "columnField": "indicator",
            "rowField": "district",
            "valueField": "Value",
            "emptyValue": "null",
        },
    )


# The first column groupingToMatrix makes: the districts.
MATRIX_FIRST_COLUMN = "district\\indicator"


def _district_column() -> list[dm.DynamicConfigValue]:
    return [
        _prop("displayName", "区 District"),
        _prop("mappings", district_mappings()),
        _prop("unit", "string"),
        _prop("custom.cellOptions", cm.TableAutoCellOptions()),
    ]


def domain_panels(domain: Domain) -> list[Item]:
    """The values and the statuses of one domain's indicators, one row per district."""
    indicators = [i for i in CATALOGUE if i.domain == domain]
    selector = "|".join(i.id.replace(".", "\\\\.") for i in indicators)
    names = ", ".join(i.id for i in indicators)
    title = DOMAIN_TITLES[domain]
    values = (
        _table(
            f"{title}: values by district",
            [query(f'cityvitals_indicator_value{{indicator=~"{selector}"}}', instant=True)],
            w=14,
            h=11,
            description=(
                f"Latest value of {names} for the city and each district. Colours use the "
                "catalogue's default thresholds; the status table beside it is authoritative."
            ),
        )
        .with_transformation(_matrix())
        .override_by_name(MATRIX_FIRST_COLUMN, _district_column())
    )
    statuses = (
        _table(
            f"{title}: status by district",
            [query(f'cityvitals_indicator_status{{indicator=~"{selector}"}}', instant=True)],
            w=10,
            h=11,
            description="Status as the API computes it (thresholds as configured).",
            custom=cm.TableFieldOptions(
                cell_options=cm.TableColoredBackgroundCellOptions(),
                align=cm.FieldTextAlignment.CENTER,
            ),
        )
        .mappings(status_mappings())
        .with_transformation(_matrix())
        .override_by_name(MATRIX_FIRST_COLUMN, _district_column())
    )
    for i in indicators:
        values.override_by_name(
            i.id,
            [
                _prop("displayName", f"{i.name_zh} {i.name_en}"),
                _prop("unit", grafana_unit(i)),
                _prop("thresholds", threshold_steps(i.thresholds).build()),
                _prop("custom.cellOptions", cm.TableColorTextCellOptions()),
            ],
        )
        statuses.override_by_name(i.id, [_prop("displayName", f"{i.name_zh} {i.name_en}")])
    return [db.Row(title), values, statuses]


def city_overview() -> dm.Dashboard:
    """Vital signs per district, district statuses and active alerts."""
    online = BY_ID["devices.online_ratio"]
    items: list[Item] = [
        db.Row("城市运行生命体征 City vital signs"),
        _stat(
            "全市状态 City status",
            [query('cityvitals_district_status{district="city"}', "city")],
            color=cm.BigValueColorMode.BACKGROUND,
            graph=cm.BigValueGraphMode.NONE,
            w=6,
            h=5,
        )
        .text_mode(cm.BigValueTextMode.VALUE)
        .mappings(status_mappings())
        .color_scheme(_by_thresholds()),
        _stat(
            "活动告警 Active alerts",
            [query("sum by (severity) (cityvitals_alerts_active)", "{{severity}}")],
            color=cm.BigValueColorMode.VALUE,
            graph=cm.BigValueGraphMode.NONE,
            w=6,
            h=5,
        ).text_mode(cm.BigValueTextMode.VALUE_AND_NAME),
        _stat(
            f"{online.name_zh} {online.name_en}",
            [query(f'cityvitals_indicator_value{{indicator="{online.id}", district="city"}}')],
            color=cm.BigValueColorMode.VALUE,
            graph=cm.BigValueGraphMode.AREA,
            w=6,
            h=5,
            unit=grafana_unit(online),
        )
        .thresholds(threshold_steps(online.thresholds))
        .decimals(1),
        _stat(
            "数据快照时延 Snapshot age",
            [query("max(cityvitals_snapshot_age_seconds)", "age")],
            color=cm.BigValueColorMode.VALUE,
            graph=cm.BigValueGraphMode.AREA,
            w=6,
            h=5,
            unit="s",
            description="Age of the served snapshot; alert CityVitalsSnapshotStale at 30 s.",
        ).thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps(
                [dm.Threshold(value=None, color="green"), dm.Threshold(value=30, color="orange")]
            )
        ),
        _table(
            "各区状态 District status",
            [query('cityvitals_district_status{district!="city"}', instant=True)],
            w=8,
            h=14,
            description="Worst status of each district's indicators.",
            custom=cm.TableFieldOptions(cell_options=cm.TableAutoCellOptions()),
        )
        .override_by_name(
            "district",
            [_prop("displayName", "区 District"), _prop("mappings", district_mappings())],
        )
        .override_by_name(
            "Value",
            [
                _prop("displayName", "状态 Status"),
                _prop("mappings", status_mappings()),
                _prop("custom.cellOptions", cm.TableColoredBackgroundCellOptions()),
            ],
        )
        .with_transformation(
            _transform(
                "organize",
                {
                    "excludeByName": {
                        "Time": True,
                        "__name__": True,
                        "job": True,
                        "instance": True,
                    },
                    "indexByName": {"district": 0, "Value": 1},
                },
            )
        )
        .with_transformation(_transform("sortBy", {"sort": [{"field": "Value", "desc": True}]})),
        _timeline(
            "各区状态变化 District status over time",
            [
                query(
                    'max by (district) (cityvitals_district_status{district!="city"})',
                    "{{district}}",
                )
            ],
            mappings=status_mappings(),
            show_value=cm.VisibilityMode.NEVER,
            w=16,
            h=14,
        ).row_height(0.8),
        db.Row("活动告警 Active alerts"),
        _table(
            "活动告警 Active alerts",
            [query("cityvitals_alert_active == 1", instant=True)],
            w=24,
            h=10,
            description="Per-entity alerts opened by the API (GET /v1/alerts?state=active).",
        )
        .override_by_name("district", [_prop("mappings", district_mappings())])
        .override_by_name(
            "severity",
            [
                _prop(
                    "mappings",
                    [
                        dm.ValueMap(
                            options={
                                s.label: dm.ValueMappingResult(color=STATUS_COLOURS[s], index=i)
                                for i, s in enumerate(Status)
                                if s is not Status.NORMAL
                            }
                        )
                    ],
                ),
                _prop("custom.cellOptions", cm.TableColoredBackgroundCellOptions()),
            ],
        )
        .with_transformation(
            _transform(
                "organize",
                {
                    "excludeByName": {
                        "Time": True,
                        "Value": True,
                        "__name__": True,
                        "job": True,
                        "instance": True,
                    },
                    "indexByName": {"severity": 0, "indicator": 1, "district": 2, "entity": 3},
                },
            )
        ),
    ]
    for domain in dict.fromkeys(i.domain for i in CATALOGUE):
        items += domain_panels(domain)
    return dashboard(
        "cityvitals-city-overview",
        "City Vitals · 城市运行生命体征",
        "Vital signs of the city and its districts, generated from the indicator catalogue.",
        items,
    )


def _quantiles(metric: str) -> list[prometheus.Dataquery]:
    return [
        query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _up_down(
    title: str, queries: list[prometheus.Dataquery], down: str, up: str
) -> statetimeline.Panel:
    mappings: list[dm.ValueMapping] = [
        dm.ValueMap(
            options={
                "0": dm.ValueMappingResult(text=down, color="red", index=0),
                "1": dm.ValueMappingResult(text=up, color="green", index=1),
            }
        )
    ]
    return _timeline(title, queries, mappings=mappings, show_value=cm.VisibilityMode.AUTO, w=8, h=7)


def ingestion_health() -> dm.Dashboard:
    """Throughput, lag, rejects, batches, buffer and connections of the pipeline."""
    rejected = BY_ID["devices.rejected_ratio_10m"]
    lag = BY_ID["devices.ingest_lag_p95_s"]
    rate = "$__rate_interval"
    items: list[Item] = [
        db.Row("吞吐 Throughput"),
        _stat(
            "Messages received /s (all collectors)",
            [query("sum(rate(cityvitals_collector_messages_received_total[1m]))", "received")],
            color=cm.BigValueColorMode.VALUE,
            graph=cm.BigValueGraphMode.AREA,
            w=6,
            h=8,
            unit="cps",
        ),
        _timeseries(
            "Messages received /s by collector",
            [
                query(
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
                query(
                    f"sum by (kind) (rate(cityvitals_collector_readings_stored_total[{rate}]))",
                    "stored {{kind}}",
                ),
                query(
                    f"sum by (kind) (rate(cityvitals_collector_duplicates_total[{rate}]))",
                    "duplicate {{kind}}",
                ),
            ],
            unit="cps",
            w=9,
            description="Duplicates are re-deliveries absorbed by the unique keys (exactly once).",
        ),
        db.Row("时延 Lag"),
        _timeseries(
            "Receive → acknowledgement",
            _quantiles("cityvitals_collector_ack_lag_seconds"),
            unit="s",
            w=8,
        ),
        _timeseries(
            "Since the last committed batch",
            [query("time() - cityvitals_collector_last_commit_timestamp_seconds", "{{instance}}")],
            unit="s",
            w=8,
            description="Alert CityVitalsIngestStalled when over 120 s while messages wait.",
        ),
        _timeseries(
            f"{lag.name_zh} {lag.name_en}",
            [query(f'cityvitals_indicator_value{{indicator="{lag.id}", district="city"}}', "p95")],
            unit=grafana_unit(lag),
            w=8,
            description="Device timestamp → stored, from the database (indicator " + lag.id + ").",
        ),
        _timeseries(
            "Coverage of the city figures (lowest indicator)",
            [query('min(cityvitals_indicator_coverage_ratio{district="city"})', "coverage")],
            unit="percentunit",
            w=24,
            description="Devices that reported in time ÷ devices that should have.",
        ),
        db.Row("拒收 Rejects"),
        _timeseries(
            "Dead letters /s by reason",
            [
                query(
                    f"sum by (reason) (rate(cityvitals_collector_rejected_total[{rate}]))",
                    "{{reason}}",
                )
            ],
            unit="cps",
            w=12,
        ),
        _stat(
            "Rejected share (5 min)",
            [query("cityvitals:collector_rejected_ratio:rate5m", "rejected")],
            color=cm.BigValueColorMode.VALUE,
            graph=cm.BigValueGraphMode.AREA,
            w=6,
            h=8,
            unit="percentunit",
        )
        .thresholds(threshold_steps(rejected.thresholds))
        .decimals(2),
        _timeseries(
            "Devices auto-registered /s",
            [
                query(
                    f"sum(rate(cityvitals_collector_devices_autoregistered_total[{rate}]))",
                    "unassigned",
                )
            ],
            unit="cps",
            w=6,
        ),
        db.Row("批次 Batches"),
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
            [query("cityvitals_collector_buffer_messages", "{{instance}}")],
            w=8,
            description="Bounded by the MQTT receive window (CITYVITALS_RECEIVE_MAXIMUM).",
        ),
        db.Row("连接 Connections"),
        _up_down(
            "Database reachable",
            [
                query("cityvitals_collector_database_up", "{{instance}}"),
                query("cityvitals_api_database_up", "{{instance}}"),
            ],
            "down",
            "up",
        ),
        _up_down(
            "Broker connected",
            [query("cityvitals_collector_mqtt_connected", "{{instance}}")],
            "disconnected",
            "connected",
        ),
        _up_down(
            "Scraped by Prometheus",
            [query('up{job=~"cityvitals-.*"}', "{{job}} {{instance}}")],
            "down",
            "up",
        ),
        _timeseries(
            "Reconnections (10 min)",
            [
                query(
                    "sum by (instance, target) "
                    "(increase(cityvitals_collector_reconnects_total[10m]))",
                    "{{instance}} {{target}}",
                )
            ],
            w=24,
        ),
        db.Row("接口 API"),
        _timeseries(
            "Requests /s by route",
            [
                query(
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
            [query("route:cityvitals_http_request_duration_seconds:p99_5m", "{{route}}")],
            unit="s",
            w=8,
        ),
        _timeseries(
            "Snapshot age and refresh time",
            [
                query("cityvitals_snapshot_age_seconds", "age {{instance}}"),
                query(
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
        items,
    )


def render() -> dict[str, str]:
    """Every dashboard as the text of its JSON file, by file name."""
    boards = {"city-overview.json": city_overview(), "ingestion-health.json": ingestion_health()}
    return {
        name: json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
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
