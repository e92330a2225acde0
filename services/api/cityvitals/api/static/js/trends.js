// Small trend charts from GET /v1/series. One uPlot instance per chart for the page's
// life: new data goes in with setData, never a new chart.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { Resource, listOf } from "./api.js";
import { t } from "./i18n.js";
import { TZ, formatAxis, toMs } from "./format.js";

export const WINDOW_S = 24 * 3600;
// Bucket width in seconds: 96 points over 24 h, small enough for a sparkline.
export const STEP_S = 900;

/** An API series answer as [xs (epoch s), ys]; accepts [[t, v]…] or [{t|ts|time|bucket, value|v}…]. */
export function parseSeries(data) {
  const pts = listOf(data, "points", "series", "buckets", "values");
  const xs = [];
  const ys = [];
  for (const p of pts) {
    let ts;
    let v;
    if (Array.isArray(p)) [ts, v] = p;
    else if (p && typeof p === "object") {
      ts = p.t ?? p.ts ?? p.time ?? p.bucket ?? p.start;
      v = p.value ?? p.v ?? p.avg ?? p.mean;
    }
    const ms = toMs(ts);
    if (!Number.isFinite(ms)) continue;
    xs.push(ms / 1000);
    ys.push(v === null || v === undefined ? null : Number(v));
  }
  return [xs, ys];
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export class TrendChart {
  constructor(container, unit) {
    this.container = container;
    this.unit = unit;
    this.plot = null;
    this.empty = container.parentElement?.querySelector(".trend-empty") ?? null;
    this.observer = new ResizeObserver(() => this._resize());
    this.observer.observe(container);
  }

  _make(w, h) {
    const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
    const font = `${Math.round(rem * 0.72)}px ${cssVar("--font-num") || "sans-serif"}`;
    const axis = cssVar("--text-dim") || "#8b9bb4";
    const line = cssVar("--accent") || "#38bdf8";
    const unit = this.unit;
    const scale = unit === "ratio" ? 100 : 1;
    this.scale = scale;
    this.plot = new uPlot(
      {
        width: w,
        height: h,
        // Fixed padding: uPlot's automatic padding reserves room for labels we do not draw.
        padding: [Math.round(rem * 0.4), Math.round(rem * 0.6), 0, 0],
        legend: { show: false },
        cursor: { show: false },
        select: { show: false },
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), TZ),
        scales: { x: { time: true } },
        axes: [
          {
            stroke: axis,
            font,
            size: rem * 1.3,
            gap: 2,
            ticks: { show: false },
            grid: { stroke: "rgba(148,163,184,0.08)", width: 1 },
            values: "{HH}:{mm}",
            space: rem * 3,
          },
          {
            stroke: axis,
            font,
            size: rem * 2.4,
            gap: 3,
            ticks: { show: false },
            grid: { stroke: "rgba(148,163,184,0.08)", width: 1 },
            space: rem * 1.6,
            values: (_u, splits) => splits.map((v) => formatAxis(v / scale, unit)),
          },
        ],
        series: [
          {},
          {
            stroke: line,
            width: Math.max(1.5, rem / 8),
            fill: "rgba(56,189,248,0.12)",
            points: { show: false },
            spanGaps: false,
          },
        ],
      },
      [[], []],
      this.container,
    );
  }

  _resize() {
    const w = Math.floor(this.container.clientWidth);
    const h = Math.floor(this.container.clientHeight);
    if (w < 10 || h < 10) return;
    const rem = parseFloat(getComputedStyle(document.documentElement).fontSize);
    if (this.plot && rem !== this.rem) {
      // The screen was rescaled (another display): axis fonts are fixed at creation.
      this.pending = this.pending ?? this.data;
      this.plot.destroy();
      this.plot = null;
    }
    this.rem = rem;
    if (!this.plot) {
      this._make(w, h);
      if (this.pending) this.setData(this.pending);
    } else if (w !== this.plot.width || h !== this.plot.height) {
      this.plot.setSize({ width: w, height: h });
    }
  }

  setData([xs, ys]) {
    const hasData = ys.some((v) => v !== null);
    if (this.empty) {
      this.empty.textContent = hasData ? "" : t("trend_no_data");
      this.empty.hidden = hasData;
    }
    // Axes over no data would only show made-up times.
    this.container.style.visibility = hasData ? "" : "hidden";
    if (!this.plot) {
      this.pending = [xs, ys];
      return;
    }
    this.pending = null;
    this.data = [xs, ys];
    const scaled = this.scale === 1 ? ys : ys.map((v) => (v === null ? null : v * this.scale));
    this.plot.setData([xs, scaled]);
  }
}

/** A set of charts fed from /v1/series, refreshed together. */
export class TrendSet {
  constructor(base) {
    this.base = base;
    this.items = [];
    this.district = null;
  }

  add(indicator, container, unit) {
    const chart = new TrendChart(container, unit);
    this.items.push({ indicator, chart, res: new Resource("") });
    return chart;
  }

  setDistrict(district) {
    this.district = district;
  }

  url(indicator, nowMs) {
    const to = new Date(Math.floor(nowMs / 1000) * 1000);
    const from = new Date(to.getTime() - WINDOW_S * 1000);
    const q = new URLSearchParams({ indicator, from: from.toISOString(), to: to.toISOString(), step: String(STEP_S) });
    if (this.district) q.set("district", this.district);
    return `${this.base}/v1/series?${q}`;
  }

  /** Fetch every chart's series; a failing one keeps its last picture. */
  async refresh(nowMs, timeoutMs) {
    for (const it of this.items) {
      it.res.retarget(this.url(it.indicator, nowMs));
      try {
        const r = await it.res.get(timeoutMs);
        if (r.changed) it.chart.setData(parseSeries(r.data));
      } catch {
        // A chart without history is not an outage: the vitals poll owns the banner.
      }
    }
  }
}
