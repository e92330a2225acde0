"""The live city screen in a real Chromium against a canned API whose data the test changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.fix_services import wait_until
from tests.screen.fake_api import FakeApi, Scenario, demo_alerts, demo_scenario

pytestmark = pytest.mark.browser

POLL_MS = 500
SHANGHAI = ZoneInfo("Asia/Shanghai")


def open_screen(page: Page, api: FakeApi, query: str = "") -> None:
    """Load the screen and wait for the first snapshot to be drawn."""
    page.goto(f"{api.url}/?poll={POLL_MS}{query}")
    expect(page.locator('.tile[data-district="huangpu"]')).to_have_attribute(
        "data-status", re.compile(r"normal|attention|warning|critical")
    )


def card(page: Page, indicator: str) -> Locator:
    """The city-level card of an indicator."""
    return page.locator(f'#vitals .ind[data-indicator="{indicator}"]')


def test_tile_colour_and_figures_follow_new_data(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    tile = page.locator('.tile[data-district="xuhui"]')
    expect(tile).to_have_attribute("data-status", "normal")
    expect(tile.locator(".tile-status")).to_have_text("正常")
    colour_before = tile.evaluate("e => getComputedStyle(e).backgroundColor")
    free = card(page, "parking.free_spaces").locator(".ind-value")
    before = free.inner_text()

    def change(s: Scenario) -> None:
        s.set("xuhui", "waste.fire_risk", 1.0)
        s.set("xuhui", "parking.free_spaces", 5000.0)

    fake_api.update(change)
    expected = next(
        i["value"]
        for i in fake_api.scenario.vitals()["indicators"]
        if i["id"] == "parking.free_spaces"
    )

    expect(tile).to_have_attribute("data-status", "critical")
    expect(tile.locator(".tile-status")).to_have_text("严重")
    expect(tile.locator(".tile-driver")).to_have_text("火灾风险")
    expect(tile.locator(".tile-figure")).to_have_text("1")
    assert tile.evaluate("e => getComputedStyle(e).backgroundColor") != colour_before
    expect(free).to_have_text(f"{round(expected):,}")
    assert free.inner_text() != before
    expect(page.locator("#city-status")).to_have_attribute("data-status", "critical")
    expect(card(page, "waste.fire_risk")).to_have_attribute("data-status", "critical")


def test_language_toggle_switches_names_to_english(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    tile_name = page.locator('.tile[data-district="jingan"] .tile-name')
    occ_name = card(page, "parking.occupancy_ratio").locator(".ind-name")
    expect(tile_name).to_have_text("静安")
    expect(occ_name).to_have_text("泊位占用率")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")

    page.click("#lang-toggle")
    expect(tile_name).to_have_text("Jing'an")
    expect(occ_name).to_have_text("Parking occupancy")
    expect(page.locator('.domain[data-domain="waste"] .panel-title')).to_have_text("Waste huts")
    expect(page.locator('.tile[data-district="jingan"] .tile-status')).to_have_text("Normal")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    # The choice survives a reload (a wall screen restarts in the language it was left in).
    page.reload()
    expect(tile_name).to_have_text("Jing'an")
    page.click("#lang-toggle")
    expect(tile_name).to_have_text("静安")


def _clock_seconds(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def _near_now(clock: str, slack_s: int = 5) -> bool:
    now = datetime.now(SHANGHAI)
    diff = abs(_clock_seconds(clock) - (now.hour * 3600 + now.minute * 60 + now.second))
    return min(diff, 86400 - diff) <= slack_s


def test_api_errors_show_banner_with_last_good_time(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    fake_api.fail_status = 503
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-kind", "lost")
    expect(page.locator("#banner-title")).to_have_text("与数据服务的连接已中断")
    last_good = page.locator("#banner-time").inner_text()
    assert re.fullmatch(r"\d\d:\d\d:\d\d", last_good)
    assert _near_now(last_good)
    expect(page.locator("#banner-body")).to_contain_text(last_good)
    expect(page.locator("body")).to_have_class(re.compile(r"\bis-lost\b"))
    expect(page.locator("#conn-dot")).to_have_class(re.compile(r"\bis-down\b"))

    fake_api.fail_status = None
    expect(banner).to_be_hidden()
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bis-lost\b"))


def test_stopped_server_shows_banner_with_last_good_time(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    figure = card(page, "energy.load_kw").locator(".ind-value")
    shown = figure.inner_text()
    fake_api.stop()
    expect(page.locator("#banner")).to_be_visible(timeout=10000)
    last_good = page.locator("#banner-time").inner_text()
    assert _near_now(last_good, slack_s=10)
    expect(page.locator("#banner-body")).to_contain_text(last_good)
    # The old figure stays readable but is visibly dimmed, never shown as current.
    assert figure.inner_text() == shown
    page.wait_for_function(
        "getComputedStyle(document.getElementById('vitals')).opacity < 0.5", timeout=5000
    )


def test_frozen_snapshot_is_flagged(page: Page, fake_api: FakeApi) -> None:
    def freeze(s: Scenario) -> None:
        s.alerts = []

    fake_api.update(freeze)
    with fake_api.lock:
        fake_api.scenario.generated_at = datetime.now(UTC) - timedelta(minutes=10)
    page.goto(f"{fake_api.url}/?poll={POLL_MS}")
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-kind", "frozen")
    expect(page.locator("#banner-title")).to_have_text("服务器数据未更新")


def test_stale_low_coverage_and_missing_values_are_marked(
    page: Page, fake_api: FakeApi, scenario: Scenario
) -> None:
    scenario.city_overrides["energy.adjustable_kw"] = {
        "value": 1234.0,
        "stale": True,
        "coverage": 0.95,
        "data_age_s": 900.0,
    }
    scenario.city_overrides["devices.completeness_1h"] = {"value": 0.996, "coverage": 0.5}
    scenario.city_overrides["parking.turnover_24h"] = {"value": None, "coverage": 0.0}
    scenario.set("qingpu", "waste.fill_pct_mean", 40.0, coverage=0.4)
    open_screen(page, fake_api)

    stale = card(page, "energy.adjustable_kw")
    expect(stale).to_have_attribute("data-stale", "true")
    expect(stale.locator(".ind-flag")).to_have_text("数据陈旧")
    expect(stale.locator(".ind-age")).to_have_text("15 分钟前")

    low = card(page, "devices.completeness_1h")
    expect(low).to_have_attribute("data-stale", "true")
    expect(low.locator(".ind-cov")).to_have_text("覆盖 50%")
    expect(low.locator(".ind-cov")).to_have_class(re.compile(r"\bis-low\b"))

    missing = card(page, "parking.turnover_24h")
    expect(missing).to_have_attribute("data-null", "true")
    expect(missing.locator(".ind-value")).to_have_text("—")
    expect(missing.locator(".ind-nodata")).to_have_text("无数据")

    fresh = card(page, "energy.load_kw")
    expect(fresh).to_have_attribute("data-stale", "false")
    expect(fresh.locator(".ind-flag")).to_have_text("")

    expect(page.locator('.tile[data-district="qingpu"]')).to_have_attribute("data-stale", "true")
    expect(page.locator('.tile[data-district="xuhui"]')).to_have_attribute("data-stale", "false")


def test_unchanged_snapshot_is_revalidated_with_etag(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    wait_until(lambda: fake_api.not_modified >= 3, 10, "three 304 answers")
    assert fake_api.requests["vitals"] >= 3


def test_dom_does_not_grow_over_many_updates(page: Page, fake_api: FakeApi) -> None:
    """A wall screen runs for weeks: nodes are reused, not piled up per poll."""
    fake_api.update(lambda s: setattr(s, "alerts", demo_alerts(datetime.now(UTC))))
    open_screen(page, fake_api)
    expect(page.locator(".alert")).to_have_count(7)
    count = "document.getElementsByTagName('*').length"
    baseline = page.evaluate(count)
    free = card(page, "parking.free_spaces").locator(".ind-value")
    for n in range(12):

        def step(s: Scenario, n: int = n) -> None:
            s.set("songjiang", "parking.free_spaces", 1000.0 + n)
            s.set("songjiang", "waste.fire_risk", float(n % 2))
            alerts = demo_alerts(datetime.now(UTC))
            s.alerts = alerts[n % 3 :] if n % 2 else alerts

        fake_api.update(step)
        total = next(
            i["value"]
            for i in fake_api.scenario.vitals()["indicators"]
            if i["id"] == "parking.free_spaces"
        )
        expect(free).to_have_text(f"{round(total):,}")

    def settle(s: Scenario) -> None:
        s.set("songjiang", "waste.fire_risk", 0.0)
        s.alerts = demo_alerts(datetime.now(UTC))

    fake_api.update(settle)
    expect(page.locator('.tile[data-district="songjiang"]')).to_have_attribute(
        "data-status", "normal"
    )
    expect(page.locator(".alert")).to_have_count(7)
    assert page.evaluate(count) == baseline


def test_alerts_newest_first_with_district_and_age(page: Page, fake_api: FakeApi) -> None:
    fake_api.update(lambda s: setattr(s, "alerts", list(reversed(demo_alerts(datetime.now(UTC))))))
    open_screen(page, fake_api)
    rows = page.locator("#alert-list .alert")
    expect(rows).to_have_count(7)
    ids = [rows.nth(i).get_attribute("data-alert") for i in range(7)]
    assert ids == [f"a{n}" for n in range(1, 8)]
    first = rows.first
    expect(first.locator(".alert-name")).to_have_text("火灾风险")
    expect(first.locator(".alert-district")).to_have_text("静安")
    expect(first.locator(".alert-age")).to_have_text("2 分钟")
    expect(first).to_have_attribute("data-severity", "critical")
    expect(page.locator('.tile[data-district="jingan"] .tile-alerts')).to_have_text("1")
    expect(page.locator("#alert-sum-total")).to_have_text("7")

    fake_api.update(lambda s: setattr(s, "alerts", []))
    expect(rows).to_have_count(0)
    expect(page.locator("#alert-note")).to_have_text("当前无告警")


def test_district_drill_down_shows_its_sites(page: Page, fake_api: FakeApi) -> None:
    open_screen(page, fake_api)
    page.click('.tile[data-district="huangpu"]')
    drill = page.locator("#drill")
    expect(drill).to_be_visible()
    expect(drill.locator(".drill-name")).to_have_text("黄浦")
    expect(drill.locator(".drill-sites .site")).to_have_count(9)
    expect(drill.locator('.ind[data-indicator="waste.fill_pct_mean"]')).to_have_count(1)
    ranks = ["normal", "attention", "warning", "critical"]
    statuses = drill.locator(".site").evaluate_all("els => els.map(e => e.dataset.status)")
    assert [ranks.index(s) for s in statuses] == sorted(
        (ranks.index(s) for s in statuses), reverse=True
    )
    expect(drill.locator(".site").first.locator(".site-name")).to_contain_text("黄浦")
    assert fake_api.requests.get("district", 0) >= 1

    # The open drill-down follows new data too.
    fake_api.update(lambda s: s.set("huangpu", "waste.fire_risk", 1.0))
    expect(drill).to_have_attribute("data-status", "critical")
    page.keyboard.press("Escape")
    expect(drill).to_be_hidden()


@pytest.fixture
def demo_api() -> Iterator[FakeApi]:
    """The canned API with an afternoon's worth of problems, for screenshots."""
    api = FakeApi(demo_scenario())
    api.start()
    try:
        yield api
    finally:
        api.stop()


def test_screenshots(browser: Browser, demo_api: FakeApi, artifacts: Path) -> None:
    """Wall, drill-down, English, lost connection and laptop views, saved for review."""
    ctx = browser.new_context(viewport={"width": 1920, "height": 1080}, timezone_id="Asia/Shanghai")
    page = ctx.new_page()
    try:
        open_screen(page, demo_api)
        expect(page.locator(".alert")).to_have_count(7)
        page.wait_for_function(
            "document.querySelectorAll('#vitals .trend-plot canvas').length === 4"
        )
        page.screenshot(path=artifacts / "wall-zh.png")

        page.click('.tile[data-district="huangpu"]')
        expect(page.locator("#drill .site")).to_have_count(9)
        page.wait_for_function("document.querySelectorAll('#drill canvas').length === 4")
        page.screenshot(path=artifacts / "drill-huangpu.png")
        page.keyboard.press("Escape")

        page.click("#lang-toggle")
        expect(page.locator('.tile[data-district="pudong"] .tile-name')).to_have_text("Pudong")
        page.screenshot(path=artifacts / "wall-en.png")
        page.click("#lang-toggle")

        demo_api.fail_status = 503
        expect(page.locator("#banner")).to_be_visible()
        page.screenshot(path=artifacts / "lost-connection.png")
        demo_api.fail_status = None
        expect(page.locator("#banner")).to_be_hidden()

        page.set_viewport_size({"width": 1366, "height": 768})
        page.screenshot(path=artifacts / "laptop-1366.png")
    finally:
        ctx.close()
    for name in ("wall-zh", "drill-huangpu", "wall-en", "lost-connection", "laptop-1366"):
        assert (artifacts / f"{name}.png").stat().st_size > 10000
