// Small DOM helpers. Text from the API only ever goes in as text (textContent), never as HTML.

import { thumbnail } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

export function when(iso) {
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso, text: d.toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) });
}

export const entityName = (e) => (e && (e.name || e.id || e.entity_id)) || "";

// An <img> whose picture arrives later (fetched with the token); its alt text says what failed, if anything.
export function thumb(path, alt, cls = "thumb") {
  const img = h("img", { class: cls, alt, width: 96, height: 96, decoding: "async" });
  fillThumb(img, path, alt);
  return img;
}

export function fillThumb(img, path, alt) {
  img.alt = alt;
  img.classList.remove("missing");
  if (img.dataset.src === path && img.src) return;
  img.dataset.src = path || "";
  thumbnail(path).then(
    (url) => { if (img.dataset.src === (path || "")) img.src = url; },
    (err) => {
      if (img.dataset.src !== (path || "")) return;
      img.removeAttribute("src");
      img.classList.add("missing");
      img.alt = `${alt} (no picture: ${err.code || err.message})`;
      img.title = err.message;
    });
}

export function show(id, visible) { $(id).hidden = !visible; }
