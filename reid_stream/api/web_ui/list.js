// The entity list: newest first (the API's order), filters and paging kept in the URL's hash.

import { api } from "./api.js";
import { $, entityName, fillThumb, h, thumb, when } from "./dom.js";

export const PAGE = 24;

export function card(e) {
  const name = entityName(e);
  const cams = e.cameras_seen || [];
  const href = `#/entity/${encodeURIComponent(e.id)}`;
  const trust = e.trust || "unknown";
  // The picture links too, but only the title is a tab stop: one stop per entity for keyboard users.
  return h("li", { class: `card trust-${trust}`, dataset: { id: e.id } },
    h("a", { href, tabindex: "-1", "aria-hidden": "true", class: "card-thumb" },
      thumb(e.thumbnail_url, `latest picture of ${name}`)),
    h("div", { class: "card-body" },
      h("h3", { class: "card-title" }, h("a", { href, class: "card-link", text: name }),
        trust !== "unknown" ? [" ", h("span", { class: `badge trust trust-${trust}`, text: trust })] : null,
        e.watch ? [" ", h("span", { class: "badge watched", title: `watch list: ${e.watch}`, text: "watched" })]
          : null,
        e.source === "archive" ? [" ", h("span", { class: "badge archived", title: "from the long-term memory",
                                                   text: "archived" })] : null),
      h("dl", { class: "facts" },
      e.name ? [h("dt", { text: "Id" }), h("dd", { class: "id", text: e.id })] : null,
      h("dt", { text: "Type" }), h("dd", { class: "type", text: e.entity_type || "?" }),
      h("dt", { text: "Trust" }), h("dd", { class: "trust-value", text: trust }),
      h("dt", { text: "First seen" }), h("dd", {}, e.first_seen ? when(e.first_seen) : "?"),
      h("dt", { text: "Last seen" }), h("dd", {}, e.last_seen ? when(e.last_seen) : "?"),
      h("dt", { text: "Appearances" }), h("dd", { class: "count", text: String(e.appearance_count ?? "?") }),
      h("dt", { text: "Cameras" }), h("dd", { class: "cameras", text: cams.join(", ") || "?" }))));
}

// The list is refreshed in place: cards whose entity did not change are kept, so pictures do not flicker,
// and are moved only when their place changed, so a live refresh does not take the keyboard focus away.
function update(ul, entities) {
  const old = new Map([...ul.children].map((li) => [li.dataset.id, li]));
  const fresh = entities.map((e) => {
    const li = old.get(e.id);
    const sig = JSON.stringify(e);
    if (li && li.dataset.sig === sig) return li;
    const made = card(e);
    made.dataset.sig = sig;
    if (li) fillThumb(made.querySelector("img"), e.thumbnail_url, `latest picture of ${entityName(e)}`);
    return made;
  });
  fresh.forEach((li, i) => { if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null); });
  while (ul.children.length > fresh.length) ul.lastElementChild.remove();
}

export function filtersFrom(params) {
  return {
    entity_type: params.get("entity_type") || "",
    camera_id: params.get("camera_id") || "",
    since: params.get("since") || "",
    source: params.get("source") === "archive" ? "archive" : "",
    offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
    limit: Math.min(1000, Math.max(1, parseInt(params.get("limit") || String(PAGE), 10) || PAGE)),
  };
}

export function hashFor(f) {
  const p = new URLSearchParams();
  for (const k of ["entity_type", "camera_id", "since", "source"]) if (f[k]) p.set(k, f[k]);
  if (f.offset) p.set("offset", f.offset);
  if (f.limit !== PAGE) p.set("limit", f.limit);
  const q = p.toString();
  return `#/${q ? "?" + q : ""}`;
}

// <input type=datetime-local> has no zone: it is the browser's local time; the API wants ISO with a zone.
export function localToIso(value) { return value ? new Date(value).toISOString() : ""; }
export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const knownCameras = new Set();

// Loads and shows one page; returns whether the list came back degraded (Redis down).
// The form shows the filters when a page is opened, not at each live refresh: that would undo what an
// operator is typing or picking before "Apply".
export async function loadList(f, showFilters = false) {
  if (showFilters) {
    $("f-type").value = f.entity_type;
    $("f-camera").value = f.camera_id;
    $("f-since").value = isoToLocal(f.since);
    $("f-source").value = f.source;
  }
  const { data, degraded } = await api.get("/api/entities", f);
  const ul = $("entities");
  update(ul, data.entities);
  for (const e of data.entities) for (const c of e.cameras_seen || []) knownCameras.add(c);
  $("cameras").replaceChildren(...[...knownCameras].sort().map((c) => h("option", { value: c })));
  const first = data.count ? f.offset + 1 : 0;
  const last = f.offset + data.entities.length;
  $("page-info").textContent = `${first}–${last} of ${data.count}`;
  $("list-status").textContent = degraded ? "The list is empty while storage is unavailable."
    : data.count ? "" : f.source ? "The archive holds no entity that matches these filters."
    : "No entity matches these filters.";
  $("prev").disabled = f.offset <= 0;
  $("next").disabled = last >= data.count;
  showSpaces();
  return Boolean(degraded);
}

// The site's learned similarity spaces (site adaptation): which version decides who is who, and the held-out
// figure it was adopted on. Quietly absent where the worker predates them or cannot say.
async function showSpaces() {
  const el = $("space-info");
  try {
    const { data } = await api.get("/api/spaces");
    const parts = (data.spaces || []).map((s) => s.version
      ? `${s.entity_type}: v${s.version} (held-out ${fmt(s.validation)}, was ${fmt(s.validation_before)}; `
        + `threshold ${fmt(s.threshold)})`
      : `${s.entity_type}: the encoder's own`);
    el.textContent = parts.length ? `Similarity space: ${parts.join(" · ")}` : "";
    el.hidden = !parts.length;
  } catch {
    el.hidden = true;
  }
}

function fmt(x) { return typeof x === "number" ? x.toFixed(3) : "n/a"; }
