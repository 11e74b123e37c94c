// Appearance search: like a stored detection (find similar), like an uploaded image, like a text. Each answers
// {query, model, results: [{detection_id, entity_id, entity_name, entity_type, camera_id, timestamp, score,
// thumbnail_url}], count, limit, offset}, best first.

import { api } from "./api.js";
import { $, h, thumb, when } from "./dom.js";

export const SEARCH_PAGE = 24;

export function similarTo(detectionId, feats) {
  return api.get(feats.similar.replace("{detection_id}", encodeURIComponent(detectionId)), { limit: SEARCH_PAGE })
    .then((r) => r.data);
}

export function byText(text, feats) {
  return api.get(feats.search.path, { [feats.search.param]: text, limit: SEARCH_PAGE }).then((r) => r.data);
}

export function byImage(file) {
  return api.upload("/api/search/image", file, { limit: SEARCH_PAGE }).then((r) => r.data);
}

// One appearance found: its picture, score, camera and time, the entity it belongs to now, and (where the
// worker has the route) a link to the appearances like it.
export function hitCard(hit, feats) {
  const href = `#/entity/${encodeURIComponent(hit.entity_id)}`;
  const label = `${hit.camera_id}, ${new Date(hit.timestamp).toLocaleString()}`;
  return h("li", { class: "card hit", dataset: { detection: hit.detection_id, entity: hit.entity_id } },
    h("a", { href, tabindex: "-1", "aria-hidden": "true", class: "card-thumb" },
      thumb(hit.thumbnail_url, `appearance on ${label}`)),
    h("div", { class: "card-body" },
      h("h3", { class: "card-title" }, h("a", { href, class: "card-link", text: hit.entity_name || hit.entity_id,
        "aria-label": `entity ${hit.entity_name ? `${hit.entity_name} (${hit.entity_id})` : hit.entity_id}` })),
      h("dl", { class: "facts" },
        h("dt", { text: "Score" }), h("dd", { class: "score", text: hit.score.toFixed(3) }),
        h("dt", { text: "Type" }), h("dd", { class: "type", text: hit.entity_type }),
        h("dt", { text: "Camera" }), h("dd", { class: "cameras", text: hit.camera_id }),
        h("dt", { text: "Seen" }), h("dd", {}, when(hit.timestamp)),
        h("dt", { text: "Detection" }), h("dd", { class: "detection", text: hit.detection_id })),
      feats.similar ? h("a", { class: "similar-link", href: `#/similar/${encodeURIComponent(hit.detection_id)}`,
        "aria-label": `Find appearances similar to the one on ${label}`, text: "Find similar" }) : null));
}

export function showResults(title, answer, feats) {
  $("search-title").textContent = title;
  const hits = answer.results || [];
  $("search-results").replaceChildren(...hits.map((hit) => hitCard(hit, feats)));
  const status = $("search-status");
  status.classList.remove("error");
  status.textContent = hits.length
    ? `The ${hits.length} most alike of ${answer.count} stored appearance(s), best first (model ${answer.model}).`
    : "No stored appearance to compare with.";
}

export function showSearchError(title, message) {
  $("search-title").textContent = title;
  $("search-results").replaceChildren();
  $("search-status").textContent = message;
  $("search-status").classList.add("error");
}
