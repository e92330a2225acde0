// One indicator as a card. Cards are built once per indicator and updated in place on
// every snapshot, so a screen left running for weeks does not churn DOM nodes.

import { has, nameOf, t } from "./i18n.js";
import { formatAge, formatCoverage, formatValue, formatWithUnit, statusClass, unitLabel } from "./format.js";

export const STALE_COVERAGE = 0.8; // docs/indicators.md: coverage below this is stale

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

/** Whether the screen must mark an indicator as not trustworthy. */
export function isDoubtful(ind) {
  return ind.stale === true || (typeof ind.coverage === "number" && ind.coverage < STALE_COVERAGE);
}

/** A new, empty card for one indicator id. */
export function createCard(id, compact = false) {
  const card = el("article", compact ? "ind ind--compact" : "ind");
  card.dataset.indicator = id;
  card._name = el("div", "ind-name", card);
  const fig = el("div", "ind-figure", card);
  card._value = el("span", "ind-value", fig);
  card._unit = el("span", "ind-unit", fig);
  card._nodata = el("span", "ind-nodata", fig);
  card._stale = el("span", "ind-flag", card);
  card._by = el("div", "ind-by", card);
  const meta = el("div", "ind-meta", card);
  card._cov = el("span", "ind-cov", meta);
  card._age = el("span", "ind-age", meta);
  return card;
}

function byText(ind) {
  if (!ind.by || typeof ind.by !== "object") return "";
  const parts = [];
  for (const [k, v] of Object.entries(ind.by)) {
    const label = has(`by_${k}`) ? t(`by_${k}`) : k;
    const val = typeof v === "number" || v === null ? formatWithUnit(v, ind.unit) : String(v);
    parts.push(`${label} ${val}`);
  }
  return parts.join(" · ");
}

/** Show an indicator on its card. */
export function updateCard(card, ind) {
  const status = statusClass(ind.status);
  const isNull = ind.value === null || ind.value === undefined;
  const doubtful = isDoubtful(ind);
  card.dataset.status = status;
  card.dataset.stale = String(doubtful);
  card.dataset.null = String(isNull);
  card.className = `${card.classList.contains("ind--compact") ? "ind ind--compact" : "ind"} st-${status}${
    doubtful ? " is-stale" : ""
  }${isNull ? " is-null" : ""}`;
  card._name.textContent = nameOf(ind);
  card._name.title = ind.id;
  card._value.textContent = formatValue(ind.value, ind.unit);
  card._unit.textContent = isNull ? "" : unitLabel(ind.unit);
  card._nodata.textContent = isNull ? t("no_data") : "";
  card._by.textContent = isNull ? "" : byText(ind);
  const lowCov = typeof ind.coverage === "number" && ind.coverage < STALE_COVERAGE;
  card._stale.textContent = doubtful ? (ind.stale === true || !lowCov ? t("stale") : t("low_coverage")) : "";
  card._cov.textContent = `${t("coverage")} ${formatCoverage(ind.coverage)}`;
  card._cov.className = lowCov ? "ind-cov is-low" : "ind-cov";
  card._age.textContent = Number.isFinite(ind.data_age_s) ? formatAge(ind.data_age_s) : "";
}

/**
 * Keep `container`'s cards in step with `indicators`: update the ones that exist,
 * add new ones in API order, drop the ones that went away.
 */
export function syncCards(container, cards, indicators, compact = false) {
  const seen = new Set();
  let prev = null;
  for (const ind of indicators) {
    seen.add(ind.id);
    let card = cards.get(ind.id);
    if (!card) {
      card = createCard(ind.id, compact);
      cards.set(ind.id, card);
    }
    updateCard(card, ind);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== card) container.insertBefore(card, want);
    prev = card;
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
}
