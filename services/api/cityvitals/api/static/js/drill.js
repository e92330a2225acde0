// District drill-down: GET /v1/vitals/districts/{id}, the district's indicators, its
// trends and its sites (lots, huts, buildings) worst first. Refreshed while open.

import { Resource, listOf } from "./api.js";
import { syncCards, isDoubtful } from "./cards.js";
import { nameOf, t } from "./i18n.js";
import { formatWithUnit, rank, statusClass } from "./format.js";
import { TrendSet } from "./trends.js";

const MAX_SITES = 60;
const SITE_FIGURES = 3;

export class Drill {
  constructor(root, base, onClose) {
    this.root = root;
    this.base = base;
    this.onClose = onClose;
    this.id = null;
    this.res = new Resource("");
    this.cards = new Map();
    this.rows = new Map();
    this.last = null;
    this.$ = (sel) => root.querySelector(sel);
    this.$(".drill-close").addEventListener("click", () => this.close());
    this.trends = new TrendSet(base);
    for (const box of root.querySelectorAll("[data-trend]")) {
      this.trends.add(box.dataset.trend, box.querySelector(".trend-plot"), box.dataset.unit);
    }
  }

  get isOpen() {
    return this.id !== null;
  }

  open(id, summary) {
    const changed = id !== this.id;
    this.id = id;
    this.root.hidden = false;
    this.root.dataset.district = id;
    if (changed) {
      this.res.retarget(`${this.base}/v1/vitals/districts/${encodeURIComponent(id)}`);
      this.last = null;
      this.trends.setDistrict(id);
      this.$(".drill-state").textContent = t("drill_loading");
      // Until the detail arrives, show what the city snapshot already says.
      if (summary) this.renderHead(summary);
    }
  }

  close() {
    this.id = null;
    this.root.hidden = true;
    this.last = null;
    this.onClose();
  }

  async refresh(timeoutMs) {
    if (!this.isOpen) return;
    const id = this.id;
    try {
      const r = await this.res.get(timeoutMs);
      if (id !== this.id) return;
      if (r.changed || this.last === null) {
        this.last = r.data;
        this.render();
      }
      this.$(".drill-state").textContent = "";
    } catch {
      if (id === this.id) this.$(".drill-state").textContent = t("drill_error");
    }
  }

  async refreshTrends(nowMs, timeoutMs) {
    if (this.isOpen) await this.trends.refresh(nowMs, timeoutMs);
  }

  renderHead(d) {
    const status = statusClass(d.status);
    this.root.dataset.status = status;
    this.$(".drill-name").textContent = nameOf(d);
    const st = this.$(".drill-status");
    st.textContent = t(`status_${status}`);
    st.className = `drill-status pill st-${status}`;
  }

  render() {
    const d = this.last;
    if (!d) return;
    this.renderHead(d);
    syncCards(this.$(".drill-cards"), this.cards, d.indicators ?? [], true);
    this.renderSites(listOf(d.sites ?? [], "sites"));
  }

  renderSites(sites) {
    const list = this.$(".drill-sites");
    const sorted = [...sites].sort((a, b) => rank(b.status) - rank(a.status));
    const shown = sorted.slice(0, MAX_SITES);
    const keep = new Set();
    let prev = null;
    for (const s of shown) {
      const key = String(s.id);
      keep.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = document.createElement("li");
        row.dataset.site = key;
        row._name = document.createElement("span");
        row._name.className = "site-name";
        row._kind = document.createElement("span");
        row._kind.className = "site-kind";
        row._figs = document.createElement("span");
        row._figs.className = "site-figs";
        row.append(row._name, row._kind, row._figs);
        this.rows.set(key, row);
      }
      const status = statusClass(s.status);
      const inds = s.indicators ?? [];
      const doubtful = inds.some(isDoubtful);
      row.className = `site st-${status}${doubtful ? " is-stale" : ""}`;
      row.dataset.status = status;
      row._name.textContent = nameOf(s);
      row._kind.textContent = s.kind ? t(`kind_${s.kind}`) : "";
      row._figs.textContent = inds
        .slice(0, SITE_FIGURES)
        .map((i) => `${nameOf(i)} ${formatWithUnit(i.value, i.unit)}${isDoubtful(i) ? ` (${t("stale")})` : ""}`)
        .join(" · ");
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== row) list.insertBefore(row, want);
      prev = row;
    }
    for (const [k, row] of this.rows) {
      if (!keep.has(k)) {
        row.remove();
        this.rows.delete(k);
      }
    }
    const note = this.$(".drill-sites-note");
    if (sites.length === 0) note.textContent = t("drill_no_sites");
    else if (sites.length > shown.length)
      note.textContent = t("drill_sites_more", { n: sites.length - shown.length, m: shown.length });
    else note.textContent = "";
    this.$(".drill-sites-count").textContent = String(sites.length);
  }
}
