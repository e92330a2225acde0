// The City Vitals screen: polls /v1/vitals with If-None-Match, shows the city, its
// districts, vital signs by domain, active alerts and trends, and says so loudly when
// its figures are no longer current.
//
// URL parameters: ?lang=zh|en, ?poll=<ms> (default 5000), ?api=<base URL>.

import { Resource, listOf } from "./api.js";
import { syncCards } from "./cards.js";
import { applyChrome, lang, nameOf, setLang, t } from "./i18n.js";
import { STATUSES, formatAge, formatClock, formatDate, statusClass, toMs } from "./format.js";
import { TileMap } from "./tilemap.js";
import { AlertList } from "./alerts.js";
import { TrendSet } from "./trends.js";
import { Drill } from "./drill.js";

const params = new URLSearchParams(location.search);
const BASE = (params.get("api") || "").replace(/\/$/, "");
const POLL_MS = Math.max(500, Number(params.get("poll")) || 5000);
const TIMEOUT_MS = Math.min(8000, Math.max(2000, POLL_MS));
const TREND_EVERY_MS = 60000;
// A snapshot whose generated_at is this much older than the server's clock is frozen:
// the API answers but no longer recomputes.
const FROZEN_S = 60;
const LANG_KEY = "cityvitals.lang";

const $ = (id) => document.getElementById(id);

const state = {
  vitals: null,
  lastGoodServerMs: NaN, // server time of the last good answer
  skewMs: 0, // server clock − our clock
  lost: false,
  frozen: false,
  dbDown: false,
  nextTrendMs: 0,
  names: { indicators: new Map(), districts: new Map() },
};

const vitalsRes = new Resource(`${BASE}/v1/vitals`);
const alertsRes = new Resource(`${BASE}/v1/alerts?state=active`);
const domainCards = new Map(); // domain → Map(id → card)
const domainBoxes = new Map();
for (const box of document.querySelectorAll(".domain")) {
  domainBoxes.set(box.dataset.domain, box);
  domainCards.set(box.dataset.domain, new Map());
}

const tiles = new TileMap($("tilemap"), (id) => openDistrict(id));
const alerts = new AlertList($("alert-list"), $("alert-count"), $("alert-note"), $("alert-sum"));
const trends = new TrendSet(BASE);
for (const box of document.querySelectorAll("#vitals [data-trend]")) {
  trends.add(box.dataset.trend, box.querySelector(".trend-plot"), box.dataset.unit);
}
const drill = new Drill($("drill"), BASE, () => tiles.select(null));

function nowServer() {
  return Date.now() + state.skewMs;
}

function openDistrict(id) {
  const summary = state.vitals?.districts?.find((d) => d.id === id);
  tiles.select(id);
  drill.open(id, summary);
  document.body.classList.add("is-drilled");
  void drill.refresh(TIMEOUT_MS);
  void drill.refreshTrends(nowServer(), TIMEOUT_MS);
}

function indexNames(v) {
  const inds = new Map();
  for (const i of v.indicators ?? []) inds.set(i.id, i);
  for (const d of v.districts ?? []) for (const i of d.indicators ?? []) if (!inds.has(i.id)) inds.set(i.id, i);
  state.names = { indicators: inds, districts: new Map((v.districts ?? []).map((d) => [d.id, d])) };
}

function renderVitals() {
  const v = state.vitals;
  if (!v) return;
  const status = statusClass(v.status);
  const city = $("city-status");
  city.dataset.status = status;
  city.className = `city st-${status}`;
  $("city-pill").textContent = t(`status_${status}`);
  $("generated-at").textContent = formatClock(toMs(v.generated_at));

  const byDomain = new Map([...domainBoxes.keys()].map((k) => [k, []]));
  for (const ind of v.indicators ?? []) {
    const dom = ind.id.split(".", 1)[0];
    if (byDomain.has(dom)) byDomain.get(dom).push(ind);
  }
  for (const [dom, inds] of byDomain) {
    const box = domainBoxes.get(dom);
    syncCards(box.querySelector(".cards"), domainCards.get(dom), inds);
    const worst = inds.reduce((w, i) => Math.max(w, STATUSES.indexOf(i.status)), 0);
    box.dataset.status = STATUSES[worst];
  }
  for (const tr of document.querySelectorAll("[data-trend]")) {
    const ind = state.names.indicators.get(tr.dataset.trend);
    tr.querySelector(".trend-name").textContent = ind ? nameOf(ind) : "";
  }

  const districts = v.districts ?? [];
  tiles.update(districts, alerts.counts());
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const d of districts) if (d.status in counts) counts[d.status] += 1;
  for (const s of STATUSES) {
    const el = document.querySelector(`#status-counts [data-count="${s}"] .count-n`);
    if (el) el.textContent = String(counts[s]);
  }
}

function renderBanner() {
  const banner = $("banner");
  document.body.classList.toggle("is-lost", state.lost);
  document.body.classList.toggle("is-frozen", state.frozen && !state.lost);
  $("conn-dot").className = `conn-dot ${state.lost ? "is-down" : "is-up"}`;
  $("conn-label").textContent = state.lost ? t("disconnected") : t("connected");
  if (state.lost) {
    banner.hidden = false;
    banner.dataset.kind = "lost";
    $("banner-title").textContent = t("lost_title");
    $("banner-body").textContent = Number.isFinite(state.lastGoodServerMs)
      ? t("lost_body", {
          time: formatClock(state.lastGoodServerMs),
          age: formatAge((nowServer() - state.lastGoodServerMs) / 1000),
        })
      : t("lost_never");
    $("banner-time").textContent = formatClock(state.lastGoodServerMs);
  } else if (state.frozen && state.vitals) {
    const gen = toMs(state.vitals.generated_at);
    banner.hidden = false;
    banner.dataset.kind = "frozen";
    $("banner-title").textContent = t("frozen_title");
    $("banner-body").textContent = t(state.dbDown ? "db_down_body" : "frozen_body", {
      time: formatClock(gen),
      age: formatAge((nowServer() - gen) / 1000),
    });
    $("banner-time").textContent = formatClock(gen);
  } else {
    banner.hidden = true;
    banner.dataset.kind = "";
  }
}

function renderAll() {
  applyChrome(document);
  renderVitals();
  alerts.render();
  drill.render();
  renderBanner();
  tick();
}

async function pollVitals() {
  try {
    const r = await vitalsRes.get(TIMEOUT_MS);
    const clientMs = Date.now();
    if (Number.isFinite(r.serverMs)) state.skewMs = r.serverMs - clientMs;
    state.lastGoodServerMs = nowServer();
    state.lost = false;
    if (r.changed) {
      state.vitals = r.data;
      const gen = toMs(r.data.generated_at);
      // The API sets `stale` while its database is away; an old generated_at means
      // its refresh loop stopped. Either way the figures are not current.
      state.dbDown = r.data.stale === true;
      state.frozen = state.dbDown || (Number.isFinite(gen) && (nowServer() - gen) / 1000 > FROZEN_S);
      indexNames(r.data);
      renderVitals();
    }
    return true;
  } catch {
    state.lost = true;
    return false;
  } finally {
    renderBanner();
  }
}

async function pollAlerts() {
  try {
    const r = await alertsRes.get(TIMEOUT_MS);
    if (r.changed || alerts.names !== state.names) {
      alerts.set(listOf(r.data, "alerts"), state.names);
      if (state.vitals) tiles.update(state.vitals.districts ?? [], alerts.counts());
    }
  } catch {
    alerts.unavailable();
  }
}

async function poll() {
  const ok = await pollVitals();
  if (ok) {
    await pollAlerts();
    await drill.refresh(TIMEOUT_MS);
    if (Date.now() >= state.nextTrendMs) {
      state.nextTrendMs = Date.now() + TREND_EVERY_MS;
      await trends.refresh(nowServer(), TIMEOUT_MS);
      await drill.refreshTrends(nowServer(), TIMEOUT_MS);
    }
  }
  setTimeout(poll, POLL_MS);
}

function tick() {
  const now = nowServer();
  $("clock").textContent = formatClock(now);
  $("date").textContent = formatDate(now);
  alerts.tick(now);
  if (state.lost || state.frozen) renderBanner();
}

function initLang() {
  let l = params.get("lang");
  if (!l) {
    try {
      l = localStorage.getItem(LANG_KEY);
    } catch {
      l = null;
    }
  }
  setLang(l || "zh");
  $("lang-toggle").addEventListener("click", () => {
    setLang(lang() === "zh" ? "en" : "zh");
    try {
      localStorage.setItem(LANG_KEY, lang());
    } catch {
      // A kiosk without storage still switches; it just forgets on reload.
    }
    renderAll();
  });
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && drill.isOpen) drill.close();
});
const origClose = drill.onClose;
drill.onClose = () => {
  document.body.classList.remove("is-drilled");
  origClose();
};

initLang();
renderAll();
setInterval(tick, 1000);
void poll();
