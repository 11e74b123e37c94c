// The entity browser: sign-in, routing (#/ list, #/entity/ID, #/search?q=), the banner, live refresh.

import { ApiError, api, features, forgetThumbnails, token, whenUnauthorized } from "./api.js";
import { $, h, show } from "./dom.js";
import { actionFor, loadEntity, renderEntity, similarTo } from "./entity.js";
import { card, filtersFrom, hashFor, loadList, localToIso } from "./list.js";

const REFRESH_MS = 3000;
const VIEWS = ["signin", "list-view", "entity-view", "search-view"];
let feats = null;        // what the worker's OpenAPI document offers; null until signed in
let current = null;      // the entity on screen
let timer = null;
let flash = "";          // what the next view says once it is shown (e.g. "Erased x.")

function view(name) {
  for (const v of VIEWS) show(v, v === name);
  const signedIn = name !== "signin";
  show("sign-out", signedIn);
  show("search", signedIn);
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function signedOut(message) {
  token.clear();
  feats = null;
  forgetThumbnails();
  clearTimeout(timer);
  banner("");
  view("signin");
  $("signin-error").textContent = message || "";
  $("signin-error").hidden = !message;
  $("token").value = "";
  $("token").focus();
}

whenUnauthorized(() => signedOut("The worker refused the token (401 Unauthorized). Check it and sign in again."));

async function signIn(value) {
  token.set(value);
  try {
    const { data } = await api.get("/api/openapi.json");
    feats = features(data);
  } catch (err) {
    if (err.status !== 401) signedOut(`Could not sign in: ${err.message}`);
    return;
  }
  $("signin-error").hidden = true;
  $("token").value = "";
  configureSearch();
  route();
}

function configureSearch() {
  $("search-label").textContent = feats.search ? "Search entities" : "Find entity by id";
  $("search-q").placeholder = feats.search ? "name, id, notes…" : "entity id";
}

function failure(err, where) {
  if (err.status === 401) return;  // signedOut() has said it
  if (err.status === 503) {
    banner("Degraded: storage (Redis) is unavailable. Entity pages cannot be read until it returns.");
  } else if (err.status === 0) {
    banner(`Degraded: ${err.message}.`);
  }
  $(where).textContent = err.status === 404 ? err.message : `Error: ${err.message}` +
    (err.status ? ` (HTTP ${err.status})` : "");
}

// --- list ----------------------------------------------------------------------------------------

async function refreshList(f, showFilters = false) {
  clearTimeout(timer);
  try {
    const degraded = await loadList(f, showFilters);
    banner(degraded ? "Degraded: storage (Redis) is unavailable, so the entity list is empty. The worker keeps "
      + "running and the list comes back when Redis does." : "");
  } catch (err) {
    failure(err, "list-status");
  }
  if (feats && !$("list-view").hidden && $("live").checked) {
    timer = setTimeout(() => { if (!document.hidden) refreshList(f); else refreshList.pending = f; }, REFRESH_MS);
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && refreshList.pending) { const f = refreshList.pending; refreshList.pending = null; refreshList(f); }
});

function listFilters() { return filtersFrom(new URLSearchParams(location.hash.split("?")[1] || "")); }

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  location.hash = hashFor({ ...listFilters(), entity_type: $("f-type").value, camera_id: $("f-camera").value.trim(),
                            since: localToIso($("f-since").value), offset: 0 });
});
$("f-clear").addEventListener("click", () => { location.hash = hashFor({ ...filtersFrom(new URLSearchParams()) }); });
$("prev").addEventListener("click", () => {
  const f = listFilters();
  location.hash = hashFor({ ...f, offset: Math.max(0, f.offset - f.limit) });
});
$("next").addEventListener("click", () => { const f = listFilters(); location.hash = hashFor({ ...f, offset: f.offset + f.limit }); });
$("live").addEventListener("change", () => { if ($("live").checked) refreshList(listFilters()); else clearTimeout(timer); });

// --- entity --------------------------------------------------------------------------------------

async function showEntity(id) {
  $("entity-status").textContent = "";
  $("entity-title").textContent = id;
  try {
    current = await loadEntity(id);
    renderEntity(current, feats);
    banner("");
  } catch (err) {
    current = null;
    $("entity-facts").replaceChildren();
    $("timeline").replaceChildren();
    $("lanes").replaceChildren();
    $("actions").hidden = true;
    failure(err, "entity-status");
  }
}

function confirmed(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"),
    { once: true }));
}

for (const form of document.querySelectorAll("#actions .act")) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const status = $("entity-status");
    if (form.id === "act-similar") return runSimilar(current);
    const act = actionFor(form, current, feats);
    if (act.error) { status.textContent = act.error; return; }
    if (!(await confirmed(act.ask))) { status.textContent = "Cancelled."; return; }
    try {
      await api.send(act.method, act.path, act.body);
    } catch (err) {
      status.textContent = `Could not ${form.querySelector("button[type=submit]").textContent.replace("…", "").toLowerCase()}: `
        + `${err.message}${err.status ? ` (HTTP ${err.status})` : ""}`;
      return;
    }
    if (act.leave) { flash = `${act.done} (${current.id})`; location.hash = "#/"; return; }
    await showEntity(current.id);
    status.textContent = act.done;
  });
}

// --- search --------------------------------------------------------------------------------------

function results(title, entities) {
  view("search-view");
  $("search-title").textContent = title;
  $("search-results").replaceChildren(...entities.map(card));
  $("search-status").textContent = entities.length ? `${entities.length} found.` : "Nothing found.";
}

async function runSimilar(e) {
  try {
    results(`Similar to ${e.id}`, await similarTo(e, feats));
  } catch (err) { failure(err, "entity-status"); }
}

async function runSearch(q) {
  view("search-view");
  $("search-q").value = q;
  try {
    const { data } = await api.get(feats.search.path, { [feats.search.param]: q });
    results(`Results for "${q}"`, Array.isArray(data) ? data : data.entities || data.results || []);
  } catch (err) { failure(err, "search-status"); }
}

$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  location.hash = feats && feats.search ? `#/search?q=${encodeURIComponent(q)}` : `#/entity/${encodeURIComponent(q)}`;
});

// --- routing -------------------------------------------------------------------------------------

function route() {
  clearTimeout(timer);
  if (!token.get() || !feats) return;
  $("notice").textContent = flash;
  $("notice").hidden = !flash;
  flash = "";
  const hash = location.hash || "#/";
  if (hash.startsWith("#/entity/")) {
    view("entity-view");
    showEntity(decodeURIComponent(hash.slice("#/entity/".length)));
  } else if (hash.startsWith("#/search") && feats.search) {
    runSearch(new URLSearchParams(hash.split("?")[1] || "").get("q") || "");
  } else if (hash.startsWith("#ap-")) {
    // an in-page link of the timeline: nothing to load
  } else {
    view("list-view");
    refreshList(listFilters(), true);
  }
  $("main").focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
$("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value.trim()); });
$("sign-out").addEventListener("click", () => signedOut(""));

if (token.get()) signIn(token.get());
else signedOut("");
