// UI chrome strings only. Indicator and district names never live here: they come
// from the API's `name: {zh, en}` fields, which come from the catalogue.

export const LANGS = ["zh", "en"];

const STRINGS = {
  zh: {
    title: "城市生命体征",
    subtitle: "一网统管 · 上海",
    city_status: "全市状态",
    districts: "各区态势",
    vitals: "城市生命体征",
    alerts: "实时告警",
    alerts_none: "当前无告警",
    alerts_unavailable: "告警数据暂不可用",
    alerts_more: "另有 {n} 条告警",
    domain_parking: "停车",
    domain_waste: "垃圾厢房",
    domain_energy: "能源",
    domain_devices: "设备运行",
    status_normal: "正常",
    status_attention: "关注",
    status_warning: "警告",
    status_critical: "严重",
    status_unknown: "未知",
    no_data: "无数据",
    stale: "数据陈旧",
    low_coverage: "覆盖不足",
    coverage: "覆盖",
    data_age: "数据",
    updated: "数据时间",
    now: "刚刚",
    seconds_ago: "{n} 秒前",
    minutes_ago: "{n} 分钟前",
    hours_ago: "{n} 小时前",
    days_ago: "{n} 天前",
    for_seconds: "{n} 秒",
    for_minutes: "{n} 分钟",
    for_hours: "{n} 小时",
    for_days: "{n} 天",
    lost_title: "与数据服务的连接已中断",
    lost_body: "以下数据截至 {time}（{age}），不是最新数据。正在重试…",
    lost_never: "尚未收到任何数据。正在连接…",
    frozen_title: "服务器数据未更新",
    frozen_body: "服务器快照停留在 {time}（{age}），数据可能已过时。",
    db_down_body: "服务器暂时无法访问数据库，以下数据截至 {time}（{age}），可能已过时。",
    connected: "在线",
    disconnected: "离线",
    toggle_lang: "EN",
    toggle_lang_label: "Switch to English",
    trend_24h: "近 24 小时",
    trend_no_data: "暂无历史数据",
    drill_close: "关闭",
    drill_sites: "站点",
    drill_indicators: "本区指标",
    drill_loading: "加载中…",
    drill_error: "无法加载本区详情",
    drill_sites_more: "另有 {n} 个站点未显示（按状态排序，仅显示最需关注的 {m} 个）",
    drill_no_sites: "本区暂无登记站点",
    drill_hint: "点击区块查看详情",
    legend: "图例",
    alert_value: "数值",
    alert_opened: "开始",
    entity: "对象",
    kind_parking: "停车场",
    kind_waste: "垃圾厢房",
    kind_energy: "楼宇",
    by_wet: "湿垃圾",
    by_dry: "干垃圾",
    by_recyclable: "可回收物",
    by_hazardous: "有害垃圾",
    by_parking: "停车",
    by_waste: "厢房",
    by_energy: "电表",
    unit_ratio: "%",
    unit_count: "",
    "unit_per space": "次/泊位",
    unit_kW: "kW",
    unit_kWh: "kWh",
    unit_kg: "kg",
    unit_s: "秒",
    "unit_t CO2": "吨 CO₂",
    "unit_%": "%",
  },
  en: {
    title: "City Vitals",
    subtitle: "Unified operations · Shanghai",
    city_status: "City status",
    districts: "Districts",
    vitals: "Vital signs",
    alerts: "Active alerts",
    alerts_none: "No active alerts",
    alerts_unavailable: "Alerts unavailable",
    alerts_more: "{n} more alerts",
    domain_parking: "Parking",
    domain_waste: "Waste huts",
    domain_energy: "Energy",
    domain_devices: "Devices",
    status_normal: "Normal",
    status_attention: "Attention",
    status_warning: "Warning",
    status_critical: "Critical",
    status_unknown: "Unknown",
    no_data: "no data",
    stale: "STALE",
    low_coverage: "low coverage",
    coverage: "coverage",
    data_age: "data",
    updated: "Data as of",
    now: "just now",
    seconds_ago: "{n} s ago",
    minutes_ago: "{n} min ago",
    hours_ago: "{n} h ago",
    days_ago: "{n} d ago",
    for_seconds: "{n} s",
    for_minutes: "{n} min",
    for_hours: "{n} h",
    for_days: "{n} d",
    lost_title: "Connection to the data service lost",
    lost_body: "Figures below are from {time} ({age}) and are not current. Retrying…",
    lost_never: "No data received yet. Connecting…",
    frozen_title: "Server data not updating",
    frozen_body: "The server's snapshot is stuck at {time} ({age}); figures may be out of date.",
    db_down_body: "The server cannot reach its database; figures are from {time} ({age}) and may be out of date.",
    connected: "online",
    disconnected: "offline",
    toggle_lang: "中文",
    toggle_lang_label: "切换到中文",
    trend_24h: "last 24 h",
    trend_no_data: "No history yet",
    drill_close: "Close",
    drill_sites: "Sites",
    drill_indicators: "District indicators",
    drill_loading: "Loading…",
    drill_error: "Could not load the district",
    drill_sites_more: "{n} more sites not shown (sorted by status, the {m} most urgent shown)",
    drill_no_sites: "No registered sites in this district",
    drill_hint: "Click a district for details",
    legend: "Legend",
    alert_value: "value",
    alert_opened: "since",
    entity: "entity",
    kind_parking: "Parking lot",
    kind_waste: "Waste hut",
    kind_energy: "Building",
    by_wet: "wet",
    by_dry: "dry",
    by_recyclable: "recyclable",
    by_hazardous: "hazardous",
    by_parking: "parking",
    by_waste: "waste",
    by_energy: "energy",
    unit_ratio: "%",
    unit_count: "",
    "unit_per space": "per space",
    unit_kW: "kW",
    unit_kWh: "kWh",
    unit_kg: "kg",
    unit_s: "s",
    "unit_t CO2": "t CO₂",
    "unit_%": "%",
  },
};

let current = "zh";

export function setLang(lang) {
  current = LANGS.includes(lang) ? lang : "zh";
  return current;
}

export function lang() {
  return current;
}

/** A chrome string, with `{name}` placeholders filled; unknown keys fall back to the key. */
export function t(key, vars) {
  let s = STRINGS[current][key];
  if (s === undefined) s = STRINGS.zh[key];
  if (s === undefined) return key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

/** Whether a chrome string exists (used for optional labels such as `by_*`). */
export function has(key) {
  return Object.hasOwn(STRINGS[current], key);
}

/** The name of an API object in the current language: `name` is `{zh, en}` or a string. */
export function nameOf(obj) {
  if (!obj) return "";
  const n = obj.name;
  if (n && typeof n === "object") return n[current] || n.zh || n.en || obj.id || "";
  if (typeof n === "string" && n) return n;
  return obj.id ?? "";
}

/** Apply chrome strings to every element marked `data-i18n` under `root`. */
export function applyChrome(root) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria]"))
    el.setAttribute("aria-label", t(el.dataset.i18nAria));
}
