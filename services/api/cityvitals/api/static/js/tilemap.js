// The 16 districts as a schematic tile map: a 5 × 5 grid that roughly follows
// Shanghai's geography (north up; Chongming in the Yangtze to the north-east, Pudong
// east of the Huangpu river, the outer districts around the centre). Only positions
// live here; the names come from the API.

import { nameOf, t } from "./i18n.js";
import { formatWithUnit, rank, statusClass } from "./format.js";
import { isDoubtful } from "./cards.js";

// id → [row, col, rowSpan, colSpan] (1-based grid lines).
export const LAYOUT = {
  jiading: [1, 1, 1, 2],
  baoshan: [1, 3, 1, 2],
  chongming: [1, 5, 1, 1],
  qingpu: [2, 1, 2, 1],
  putuo: [2, 2, 1, 1],
  jingan: [2, 3, 1, 1],
  hongkou: [2, 4, 1, 1],
  yangpu: [2, 5, 1, 1],
  changning: [3, 2, 1, 1],
  huangpu: [3, 3, 1, 1],
  pudong: [3, 4, 3, 2],
  songjiang: [4, 1, 1, 1],
  minhang: [4, 2, 1, 1],
  xuhui: [4, 3, 1, 1],
  jinshan: [5, 1, 1, 1],
  fengxian: [5, 2, 1, 2],
};
const ROWS = 5;

/** The indicators that set a district's status: not normal, worst first, API order on ties. */
export function drivers(district) {
  return (district.indicators ?? [])
    .filter((i) => rank(i.status) > 0)
    .map((i, n) => [i, n])
    .sort((a, b) => rank(b[0].status) - rank(a[0].status) || a[1] - b[1])
    .map(([i]) => i);
}

export class TileMap {
  constructor(container, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.tiles = new Map();
    this.extraRow = ROWS;
    this.selected = null;
  }

  _tile(id) {
    let tile = this.tiles.get(id);
    if (tile) return tile;
    tile = document.createElement("button");
    tile.type = "button";
    tile.className = "tile";
    tile.dataset.district = id;
    const pos = LAYOUT[id];
    // Tall tiles have room to list more of what is wrong.
    tile._extraLines = pos && pos[2] > 1 ? pos[2] + 1 : 0;
    if (pos) {
      tile.style.gridArea = `${pos[0]} / ${pos[1]} / span ${pos[2]} / span ${pos[3]}`;
      if (pos[2] * pos[3] > 1) tile.classList.add("tile--big");
    } else {
      // A district the layout does not know still appears, on rows below the map.
      const n = [...this.tiles.values()].filter((x) => x._extra).length;
      tile._extra = true;
      tile.style.gridArea = `${ROWS + 1 + Math.floor(n / 5)} / ${1 + (n % 5)}`;
    }
    const head = document.createElement("div");
    head.className = "tile-head";
    tile._name = document.createElement("span");
    tile._name.className = "tile-name";
    tile._alerts = document.createElement("span");
    tile._alerts.className = "tile-alerts";
    head.append(tile._name, tile._alerts);
    tile._status = document.createElement("div");
    tile._status.className = "tile-status";
    tile._driver = document.createElement("div");
    tile._driver.className = "tile-driver";
    tile._figure = document.createElement("div");
    tile._figure.className = "tile-figure";
    tile._more = document.createElement("div");
    tile._more.className = "tile-more";
    tile.append(head, tile._status, tile._more, tile._driver, tile._figure);
    tile.addEventListener("click", () => this.onSelect(id));
    this.container.appendChild(tile);
    this.tiles.set(id, tile);
    return tile;
  }

  /** Show the districts of a snapshot; `alertCounts` maps district id → active alerts. */
  update(districts, alertCounts) {
    const seen = new Set();
    for (const d of districts) {
      seen.add(d.id);
      const tile = this._tile(d.id);
      const status = statusClass(d.status);
      const drvs = drivers(d);
      const drv = drvs[0] ?? null;
      const doubtful = (d.indicators ?? []).some(isDoubtful);
      tile.dataset.status = status;
      tile.dataset.stale = String(doubtful);
      tile.className = `tile st-${status}${tile.classList.contains("tile--big") ? " tile--big" : ""}${
        doubtful ? " is-stale" : ""
      }${this.selected === d.id ? " is-selected" : ""}`;
      tile._name.textContent = nameOf(d);
      tile._status.textContent = t(`status_${status}`);
      const listed = tile._extraLines > 0;
      tile._driver.textContent = drv && !listed ? nameOf(drv) : "";
      tile._figure.textContent = drv && !listed ? formatWithUnit(drv.value, drv.unit) : "";
      this._more(tile, listed ? drvs.slice(0, tile._extraLines) : []);
      const n = alertCounts.get(d.id) ?? 0;
      tile._alerts.textContent = n > 0 ? String(n) : "";
      tile._alerts.hidden = n === 0;
      tile.title = nameOf(d);
    }
    for (const [id, tile] of this.tiles) {
      if (!seen.has(id)) {
        tile.remove();
        this.tiles.delete(id);
      }
    }
  }

  _more(tile, inds) {
    const box = tile._more;
    while (box.children.length > inds.length) box.lastChild.remove();
    while (box.children.length < inds.length) {
      const line = document.createElement("div");
      line.append(document.createElement("span"), document.createElement("b"));
      box.appendChild(line);
    }
    inds.forEach((ind, n) => {
      const line = box.children[n];
      line.firstChild.textContent = nameOf(ind);
      line.lastChild.textContent = formatWithUnit(ind.value, ind.unit);
    });
  }

  select(id) {
    this.selected = id;
    for (const [tid, tile] of this.tiles) tile.classList.toggle("is-selected", tid === id);
  }
}
