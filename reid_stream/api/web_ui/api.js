// The worker's HTTP API as the page uses it: the bearer token, errors, feature detection, thumbnails.

const TOKEN_KEY = "reid-stream.token";

// sessionStorage: the tab's own, gone when the tab closes; never a URL, a cookie or local (persistent) storage.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code || null;
  }
}

// The views' errors: {"detail": "text"} or a 422's {"detail": [{"loc": [...], "msg": "..."}]}.
function detailText(body, status) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => (e.loc ? `${e.loc.slice(-1)[0]}: ` : "") + (e.msg || "")).join("; ");
  return `HTTP ${status}`;
}

// The site the page is about: its own ?site_id= (e.g. /?site_id=home-b), sent with every API request; entities
// never cross sites. Without it, the worker's default site.
export const SITE = new URLSearchParams(location.search).get("site_id") || "";

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

// `body` goes as JSON; `raw` (a File or Blob) goes as it is, with its own type (image search's upload).
export async function request(method, path, { body, query, raw } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  if (SITE && url.pathname.startsWith("/api/") && !url.searchParams.has("site_id")) url.searchParams.set("site_id", SITE);
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  let payload;
  if (raw !== undefined) {
    headers["Content-Type"] = raw.type || "application/octet-stream";
    payload = raw;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (err) {
    throw new ApiError(0, "the worker does not answer (is it running?)");
  }
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : null;
  if (resp.status === 401) {
    onUnauthorized();
    throw new ApiError(401, "the worker refused the token (401): sign in again with a valid API token");
  }
  if (!resp.ok) throw new ApiError(resp.status, detailText(data, resp.status), data && data.error_code);
  return { data, degraded: resp.headers.get("X-Reid-Degraded") };
}

// An error as the page says it: the API's own text, then its error code and HTTP status.
export function explain(err) {
  const tags = [err.code, err.status ? `HTTP ${err.status}` : null].filter(Boolean);
  return `${err.message}${tags.length ? ` (${tags.join(", ")})` : ""}`;
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  send: (method, path, body) => request(method, path, { body }),
  upload: (path, file, query) => request("POST", path, { raw: file, query }),
};

// Which optional routes this worker has, from its OpenAPI document: a control is shown only if its route is.
export function features(spec) {
  const paths = (spec && spec.paths) || {};
  const op = (path, method) => (paths[path] || {})[method] || null;
  const patch = op("/api/entities/{entity_id}", "patch");
  const patchProps = bodyProperties(spec, patch);
  const params = (o) => ((o || {}).parameters || []).map((p) => p.name);
  // The box opens an entity by id; where the worker has GET /api/search (appearances ranked by a text, only
  // answered where the encoder has a text tower), a text that is no entity id is searched for.
  const text = op("/api/search", "get");
  const search = text && params(text).includes("text") ? { path: "/api/search", param: "text" } : null;
  const similar = op("/api/detections/{detection_id}/similar", "get") ? "/api/detections/{detection_id}/similar"
    : null;
  return {
    erase: Boolean(op("/api/entities/{entity_id}", "delete")),
    patch: Boolean(patch) && "name" in patchProps,
    notes: Boolean(patch) && "notes" in patchProps,
    trust: patch && "trust" in patchProps ? trustChoices(patchProps.trust) : null,
    merge: Boolean(op("/api/entities/{entity_id}/merge", "post")),
    split: Boolean(op("/api/entities/{entity_id}/split", "post")),
    // Watching is the PATCH's `watch` label (null unwatches); alerts go to entity-alerts.
    watch: Boolean(patch) && "watch" in patchProps,
    similar,
    search,
    image: Boolean(op("/api/search/image", "post")),
    // Listed only where the worker has the long-term memory (REID_ARCHIVE_URL).
    archive: params(op("/api/entities", "get")).includes("source"),
  };
}

// The JSON body's properties, following "$ref"s into components (pydantic-built documents use them).
function bodyProperties(spec, operation) {
  const resolve = (s, depth = 0) => {
    if (!s || depth > 5 || typeof s.$ref !== "string" || !s.$ref.startsWith("#/")) return s;
    return resolve(s.$ref.slice(2).split("/").reduce((node, key) => node && node[key], spec), depth + 1);
  };
  const schema = resolve(operation && operation.requestBody && operation.requestBody.content
    && (operation.requestBody.content["application/json"] || {}).schema);
  const props = (schema && schema.properties) || {};
  return Object.fromEntries(Object.entries(props).map(([k, v]) => {
    const r = resolve(v) || {};
    return [k, r.anyOf ? { ...r, anyOf: r.anyOf.map((x) => resolve(x) || {}) } : r];
  }));
}

// The values `trust` takes: the schema's enum (trusted, untrusted, unknown), null left out (it means unknown).
function trustChoices(schema) {
  const s = (schema.anyOf || schema.oneOf || [schema]).find((x) => x.type !== "null" && Array.isArray(x.enum));
  return s ? s.enum.map((v) => ({ label: String(v), value: v })) : null;
}

// Thumbnails need the token too, so they are fetched with it and shown as blob: URLs, kept per tab.
const thumbs = new Map();
const MAX_THUMBS = 400;

export async function thumbnail(path) {
  if (!path) throw new ApiError(404, "no thumbnail");
  if (!thumbs.has(path)) {
    const loading = (async () => {
      const resp = await fetch(new URL(path, location.origin), {
        headers: { Authorization: `Bearer ${token.get() || ""}` }, credentials: "omit" });
      if (resp.status === 401) { onUnauthorized(); throw new ApiError(401, "token refused"); }
      if (!resp.ok) {
        const body = await resp.json().catch(() => null);
        throw new ApiError(resp.status, detailText(body, resp.status), body && body.error_code);
      }
      return URL.createObjectURL(await resp.blob());
    })();
    thumbs.set(path, loading);
    loading.catch(() => thumbs.delete(path));  // a failed one is asked for again next time
    if (thumbs.size > MAX_THUMBS) {
      const [oldest, url] = thumbs.entries().next().value;
      thumbs.delete(oldest);
      url.then(URL.revokeObjectURL, () => {});
    }
  }
  return thumbs.get(path);
}

export function forgetThumbnails() {
  for (const url of thumbs.values()) url.then(URL.revokeObjectURL, () => {});
  thumbs.clear();
}
