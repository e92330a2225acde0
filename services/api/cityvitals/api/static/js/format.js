// Numbers, units, times and ages for display. Every time is shown in the city's zone.

import { has, lang, t } from "./i18n.js";

export const TZ = "Asia/Shanghai";
export const STATUSES = ["normal", "attention", "warning", "critical"];

// Intl formatters are costly to build: one per language and shape, kept for the page's life.
const cache = new Map();
function nf(key, options) {
  const k = `${lang()}|${key}`;
  let f = cache.get(k);
  if (!f) {
    f = new Intl.NumberFormat(lang() === "zh" ? "zh-CN" : "en-GB", options);
    cache.set(k, f);
  }
  return f;
}
function df(key, options) {
  const k = `${lang()}|d|${key}`;
  let f = cache.get(k);
  if (!f) {
    f = new Intl.DateTimeFormat(lang() === "zh" ? "zh-CN" : "en-GB", { timeZone: TZ, ...options });
    cache.set(k, f);
  }
  return f;
}

/** The rank of a status (unknown → -1), for sorting worst first. */
export function rank(status) {
  return STATUSES.indexOf(status);
}

/** A status the stylesheet knows, or "unknown". */
export function statusClass(status) {
  return STATUSES.includes(status) ? status : "unknown";
}

/** The display unit for an API unit string (ratios are shown as percentages). */
export function unitLabel(unit) {
  const key = `unit_${unit}`;
  return has(key) ? t(key) : (unit ?? "");
}

/** A value as text, without its unit; `null` → "—". */
export function formatValue(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (unit === "ratio") return nf("pct", { maximumFractionDigits: 1, minimumFractionDigits: 1 }).format(value * 100);
  if (unit === "count") return nf("int", { maximumFractionDigits: 0 }).format(value);
  const abs = Math.abs(value);
  if (abs >= 100000) return nf("compact", { notation: "compact", maximumFractionDigits: 1 }).format(value);
  if (abs >= 1000) return nf("int", { maximumFractionDigits: 0 }).format(value);
  if (abs >= 10) return nf("d1", { maximumFractionDigits: 1 }).format(value);
  return nf("d2", { maximumFractionDigits: 2 }).format(value);
}

/** A short axis label: compact above 10 000 (zh 万, en K). */
export function formatAxis(value, unit) {
  if (typeof value === "number" && Math.abs(value) >= 10000)
    return nf("compact0", { notation: "compact", maximumFractionDigits: 0 }).format(value);
  if (unit === "ratio") return nf("pct0", { maximumFractionDigits: 0 }).format(value * 100);
  return formatValue(value, unit);
}

/** A value with its unit, for compact places (tiles, alerts, sites). */
export function formatWithUnit(value, unit) {
  const v = formatValue(value, unit);
  if (v === "—") return v;
  const u = unitLabel(unit);
  if (!u) return v;
  return u === "%" ? `${v}%` : `${v} ${u}`;
}

/** Parse an API time (RFC 3339 string or epoch seconds/milliseconds) to epoch ms. */
export function toMs(ts) {
  if (ts === null || ts === undefined) return NaN;
  if (typeof ts === "number") return ts > 1e11 ? ts : ts * 1000;
  return Date.parse(ts);
}

/** A clock time, HH:MM:SS in the city's zone. */
export function formatClock(ms) {
  if (!Number.isFinite(ms)) return "—";
  return df("clock", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }).format(ms);
}

/** A date and time in the city's zone, for headers. */
export function formatDateTime(ms) {
  if (!Number.isFinite(ms)) return "—";
  return df("dt", {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(ms);
}

/** Today's date with weekday, in the city's zone. */
export function formatDate(ms) {
  return df("date", { year: "numeric", month: "long", day: "numeric", weekday: "short" }).format(ms);
}

/** "3 min ago" for an age in seconds. */
export function formatAge(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 5) return t("now");
  if (s < 60) return t("seconds_ago", { n: s });
  if (s < 3600) return t("minutes_ago", { n: Math.floor(s / 60) });
  if (s < 86400) return t("hours_ago", { n: Math.floor(s / 3600) });
  return t("days_ago", { n: Math.floor(s / 86400) });
}

/** "3 min" for a duration in seconds (how long an alert has been open). */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("for_seconds", { n: s });
  if (s < 3600) return t("for_minutes", { n: Math.floor(s / 60) });
  if (s < 86400) return t("for_hours", { n: Math.floor(s / 3600) });
  return t("for_days", { n: Math.floor(s / 86400) });
}

/** Coverage as "87%". */
export function formatCoverage(c) {
  if (c === null || c === undefined || !Number.isFinite(c)) return "—";
  return `${nf("cov", { maximumFractionDigits: 0 }).format(c * 100)}%`;
}
