// Active alerts, newest first, with district and age. Rows are keyed by alert id and
// reused; at most MAX_ROWS are in the DOM however many alerts are open.

import { nameOf, t } from "./i18n.js";
import { formatDuration, formatValue, formatWithUnit, statusClass, toMs } from "./format.js";

const MAX_ROWS = 40;

function span(cls, parent) {
  const e = document.createElement("span");
  e.className = cls;
  parent.appendChild(e);
  return e;
}

/**
 * An alert's value. Alerts on counting indicators (huts full, fire risk…) carry the
 * entity's own reading (a fill %, a temperature), not a count: show it as a plain number.
 */
function alertValue(a, ind) {
  if (a.value === null || a.value === undefined) return "";
  const unit = a.unit ?? ind?.unit ?? "";
  if (unit === "count") return formatValue(a.value, "");
  return formatWithUnit(a.value, unit);
}

export class AlertList {
  constructor(list, countEl, noteEl, summary) {
    this.summary = summary;
    this.list = list;
    this.countEl = countEl;
    this.noteEl = noteEl;
    this.rows = new Map();
    this.alerts = [];
    this.available = true;
  }

  _row(id) {
    let row = this.rows.get(id);
    if (row) return row;
    row = document.createElement("li");
    row.className = "alert";
    row.dataset.alert = id;
    const main = document.createElement("div");
    main.className = "alert-main";
    row._name = span("alert-name", main);
    row._value = span("alert-value", main);
    const sub = document.createElement("div");
    sub.className = "alert-sub";
    row._district = span("alert-district", sub);
    row._entity = span("alert-entity", sub);
    row._age = span("alert-age", row);
    row._sev = span("alert-sev", row);
    row.prepend(main, sub);
    this.rows.set(id, row);
    return row;
  }

  /** Replace the alert list; `names` resolves indicator and district ids to names. */
  set(alerts, names) {
    this.available = true;
    this.names = names;
    this.alerts = alerts
      .filter((a) => a && a.id !== undefined)
      .map((a) => ({ ...a, _opened: toMs(a.opened_at) }))
      .sort((a, b) => (b._opened || 0) - (a._opened || 0));
    this.render();
  }

  unavailable() {
    this.available = false;
    this.render();
  }

  /** Alerts per district id. */
  counts() {
    const m = new Map();
    for (const a of this.alerts) if (a.district) m.set(a.district, (m.get(a.district) ?? 0) + 1);
    return m;
  }

  render() {
    const shown = this.alerts.slice(0, MAX_ROWS);
    const keep = new Set();
    let prev = null;
    for (const a of shown) {
      const id = String(a.id);
      keep.add(id);
      const row = this._row(id);
      const sev = statusClass(a.severity);
      row.className = `alert st-${sev}`;
      row.dataset.severity = sev;
      const ind = this.names?.indicators.get(a.indicator);
      row._name.textContent = ind ? nameOf(ind) : (a.indicator ?? "");
      row._value.textContent = alertValue(a, ind);
      row.title = a.threshold === null || a.threshold === undefined ? "" : `${a.value} / ${a.threshold}`;
      const dist = this.names?.districts.get(a.district);
      row._district.textContent = dist ? nameOf(dist) : (a.district ?? "—");
      row._entity.textContent = a.entity_name ? nameOf({ name: a.entity_name }) : (a.entity ?? "");
      row._sev.textContent = t(`status_${sev}`);
      const want = prev ? prev.nextSibling : this.list.firstChild;
      if (want !== row) this.list.insertBefore(row, want);
      prev = row;
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    this.tick(Date.now());
    this.countEl.textContent = this.available ? String(this.alerts.length) : "—";
    if (this.summary) {
      this.summary.querySelector(".alert-sum-total").textContent = this.available ? String(this.alerts.length) : "—";
      for (const chip of this.summary.querySelectorAll("[data-sev]")) {
        const n = this.alerts.filter((a) => a.severity === chip.dataset.sev).length;
        chip.querySelector("b").textContent = this.available ? String(n) : "—";
      }
    }
    const more = this.alerts.length - shown.length;
    if (!this.available) this.noteEl.textContent = t("alerts_unavailable");
    else if (this.alerts.length === 0) this.noteEl.textContent = t("alerts_none");
    else if (more > 0) this.noteEl.textContent = t("alerts_more", { n: more });
    else this.noteEl.textContent = "";
    this.noteEl.hidden = this.noteEl.textContent === "";
    this.list.classList.toggle("is-unavailable", !this.available);
  }

  /** Refresh the ages; called every second with the (server-corrected) clock. */
  tick(nowMs) {
    for (const a of this.alerts.slice(0, MAX_ROWS)) {
      const row = this.rows.get(String(a.id));
      if (row) row._age.textContent = Number.isFinite(a._opened) ? formatDuration((nowMs - a._opened) / 1000) : "";
    }
  }
}
