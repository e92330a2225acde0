// Conditional GETs against the City Vitals API: each resource remembers its ETag and
// last body, so an unchanged snapshot costs a 304 and no parsing.

export class HttpError extends Error {
  constructor(status, url) {
    super(`HTTP ${status} for ${url}`);
    this.status = status;
  }
}

export class Resource {
  constructor(url) {
    this.url = url;
    this.etag = null;
    this.data = null;
  }

  /** Point the resource at another URL, forgetting what it had. */
  retarget(url) {
    if (url === this.url) return;
    this.url = url;
    this.etag = null;
    this.data = null;
  }

  /**
   * GET the resource; resolves to {changed, data, serverMs} or throws (network error,
   * timeout, HTTP error). `serverMs` is the server's clock from the Date header.
   */
  async get(timeoutMs) {
    const headers = { Accept: "application/json" };
    if (this.etag && this.data !== null) headers["If-None-Match"] = this.etag;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      // no-store: the browser cache must neither answer for the server nor add its own
      // validators; we send If-None-Match ourselves and so see the 304.
      const r = await fetch(this.url, { headers, cache: "no-store", signal: ctl.signal });
      const date = r.headers.get("Date");
      const serverMs = date ? Date.parse(date) : NaN;
      if (r.status === 304 && this.data !== null) return { changed: false, data: this.data, serverMs };
      if (!r.ok) throw new HttpError(r.status, this.url);
      const data = await r.json();
      this.etag = r.headers.get("ETag");
      this.data = data;
      return { changed: true, data, serverMs };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** An API list answer as an array, whether it is a bare array or wrapped in an object. */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const k of [...keys, "items", "data", "results"]) if (Array.isArray(data[k])) return data[k];
  }
  return [];
}
