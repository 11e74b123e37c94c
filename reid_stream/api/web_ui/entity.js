// One entity: its facts, a lane per camera, the timeline of appearances, and the actions the API offers.

import { api } from "./api.js";
import { $, entityName, fillThumb, h, thumb, when } from "./dom.js";

const score = (s) => (typeof s === "number" ? s.toFixed(3) : "?");
const camLabel = (a) => (a.camera_name && a.camera_name !== a.camera_id ? `${a.camera_name} (${a.camera_id})`
  : a.camera_id);

export const trustLabel = (t) => t || "unknown";

function facts(e) {
  const rows = [
    ["Id", e.id], ["Name", e.name || "(none)"], ["Trust", h("span", { class: `trust trust-${trustLabel(e.trust)}`,
      text: trustLabel(e.trust) })], ["Type", e.entity_type], ["First seen", e.first_seen && when(e.first_seen)],
    ["Last seen", e.last_seen && when(e.last_seen)], ["Appearances", String(e.appearance_count)],
    ["Cameras", (e.cameras_seen || []).join(", ")],
  ];
  if (e.notes) rows.push(["Notes", e.notes]);
  if (e.watch) rows.push(["Watch list", e.watch]);
  if ((e.plates || []).length) rows.push(["Plates", e.plates.join(", ")]);
  if ((e.merged_ids || []).length) rows.push(["Merged ids", e.merged_ids.join(", ")]);
  if (e.resolved_from) rows.push(["Asked for", `${e.resolved_from} (since merged into this entity)`]);
  if (e.retained_until) rows.push(["Kept until", when(e.retained_until)]);
  if (e.source === "archive") {
    rows.push(["Memory", "archive: the worker's working memory (Redis) has forgotten this entity; it is read from "
      + "the long-term memory, and cannot be renamed, merged or split until it is seen again"]);
  }
  return rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { dataset: { fact: k.toLowerCase() } }, v ?? "?")]);
}

function timelineItem(a, i, feats) {
  const label = `${camLabel(a)}, ${new Date(a.timestamp).toLocaleString()}`;
  return h("li", { class: "appearance", id: `ap-${i}`, tabindex: "-1", dataset: { detection: a.detection_id } },
    thumb(a.thumbnail_url, `appearance on ${label}`),
    h("div", { class: "ap-text" },
      h("span", { class: "camera", text: camLabel(a) }), " ", when(a.timestamp),
      h("span", { class: "similarity", text: `similarity ${score(a.similarity_score)}` }),
      h("span", { class: "detection", text: a.detection_id }),
      h("div", { class: "ap-actions" },
        feats.similar ? h("a", { class: "similar-link", href: `#/similar/${encodeURIComponent(a.detection_id)}`,
          "aria-label": `Find appearances similar to the one on ${label}`, text: "Find similar" }) : null,
        feats.split ? h("label", { class: "pick" },
          h("input", { type: "checkbox", name: "detection_ids", value: a.detection_id }), " select for split")
          : null)));
}

// A lane per camera, each appearance placed by its time between the entity's first and last appearance.
function lanes(appearances) {
  const times = appearances.map((a) => new Date(a.timestamp).getTime());
  const t0 = Math.min(...times);
  const span = Math.max(1, Math.max(...times) - t0);
  const byCam = new Map();
  appearances.forEach((a, i) => {
    if (!byCam.has(a.camera_id)) byCam.set(a.camera_id, []);
    byCam.get(a.camera_id).push([a, i, times[i]]);
  });
  const axis = h("div", { class: "axis", "aria-hidden": "true" }, when(new Date(t0).toISOString()),
    when(new Date(t0 + span).toISOString()));
  return [...[...byCam.entries()].map(([cam, items]) => {
    const name = camLabel(items[0][0]);
    const track = h("div", { class: "track" }, items.map(([a, i, t]) => {
      const mark = h("a", { class: "mark", href: `#ap-${i}`, title: `${name}: ${a.timestamp}`,
        "aria-label": `appearance on ${name} at ${new Date(a.timestamp).toLocaleString()}`,
        onclick: (ev) => { ev.preventDefault(); const li = $(`ap-${i}`); li.scrollIntoView({ block: "center" }); li.focus(); } },
        thumb(a.thumbnail_url, "", "thumb tiny"));
      mark.style.left = `${(92 * (t - t0)) / span}%`;  // CSSOM, allowed by the CSP (no inline style attribute)
      return mark;
    }));
    return h("div", { class: "lane", role: "group", "aria-label": `camera ${name}`, dataset: { camera: cam } },
      h("span", { class: "lane-name", text: `${name} · ${items.length}` }), track);
  }), axis];
}

export function renderEntity(e, feats) {
  $("entity-title").textContent = `${entityName(e)} · ${e.entity_type}`;
  fillThumb($("entity-thumb"), e.thumbnail_url, `latest picture of ${entityName(e)}`);
  $("entity-facts").replaceChildren(...facts(e));
  const apps = e.appearances || [];
  $("lanes").replaceChildren(...(apps.length ? lanes(apps) : [h("p", { text: "No appearance." })]));
  $("timeline").replaceChildren(...apps.map((a, i) => timelineItem(a, i, feats)));
  $("name-input").value = e.name || "";
  $("notes-input").value = e.notes || "";
  $("notes-input").hidden = $("notes-input").labels[0].hidden = !feats.notes;
  if (feats.trust) {
    $("trust-input").replaceChildren(...feats.trust.map((c, i) => h("option", { value: String(i), text: c.label,
      selected: c.value === trustLabel(e.trust) })));
  }
  $("watch-button").textContent = e.watch ? "Stop watching…" : "Watch…";
  $("watch-input").value = e.watch || "";
  $("watch-input").hidden = $("watch-input").labels[0].hidden = Boolean(e.watch);
  for (const form of document.querySelectorAll("#actions .act")) form.hidden = !feats[form.dataset.feature];
  $("actions").hidden = ![...document.querySelectorAll("#actions .act")].some((f) => !f.hidden);
}

export const loadEntity = (id) => api.get(`/api/entities/${encodeURIComponent(id)}`).then((r) => r.data);

// Each action: what to ask before doing it (nothing for name and trust, which are set back as easily), the
// request, and what to say afterwards. The PATCH answers the entity; merge and split answer
// {update, entities}; erase answers {purged}.
export function actionFor(form, e, feats) {
  const id = encodeURIComponent(e.id);
  const path = `/api/entities/${id}`;
  switch (form.id) {
    case "act-name": {
      // An empty field clears the value (null): the API refuses an empty name.
      const body = { name: $("name-input").value.trim() || null };
      if (feats.notes) body.notes = $("notes-input").value.trim() || null;
      return { method: "PATCH", path, body, verb: "save the name",
               done: body.name ? `Named "${body.name}".` : "Name cleared." };
    }
    case "act-trust": {
      const choice = feats.trust[Number($("trust-input").value)];
      return { method: "PATCH", path, body: { trust: choice.value }, verb: "set the trust",
               done: `Trust set to ${choice.label}.` };
    }
    case "act-merge": {
      const other = $("merge-input").value.trim();
      if (!other) return { error: "Type the id of the entity to merge into this one." };
      return { ask: `Merge entity ${other} into ${e.id}? Its appearances will belong to ${e.id}, and its id will `
               + `open ${e.id}.`, method: "POST", path: `${path}/merge`, body: { other_id: other }, verb: "merge",
               done: `Merged ${other} into this entity.` };
    }
    case "act-split": {
      const ids = [...document.querySelectorAll("#timeline input[name=detection_ids]:checked")].map((c) => c.value);
      if (!ids.length) return { error: "Select at least one appearance in the timeline to split off." };
      return { ask: `Split ${ids.length} appearance(s) off ${e.id} into a new entity? The stream will not join `
               + "them again.", method: "POST", path: `${path}/split`, body: { detection_ids: ids }, verb: "split",
               done: `Split ${ids.length} appearance(s) off into a new entity.` };
    }
    case "act-watch": {
      if (e.watch) {
        return { ask: `Stop watching entity ${e.id} ("${e.watch}")?`, method: "PATCH", path, body: { watch: null },
                 verb: "stop watching", done: "No longer watched." };
      }
      const label = $("watch-input").value.trim();
      if (!label) return { error: "Type a label: what the alerts will say." };
      return { ask: `Watch entity ${e.id} as "${label}"? Its next appearances raise alerts on entity-alerts.`,
               method: "PATCH", path, body: { watch: label }, verb: "watch", done: `Watched as "${label}".` };
    }
    case "act-erase":
      return { ask: `Erase entity ${e.id} with its ${e.appearance_count} appearance(s)? This cannot be undone.`,
               method: "DELETE", path, verb: "erase", done: "Erased.", leave: true };
    default:
      return { error: `unknown action ${form.id}` };
  }
}
