// The entity browser: sign-in, routing (#/ list, #/entity/ID, #/similar/DETECTION, #/search?text=, #/image),
// the banner, live refresh.

import { SITE, api, explain, features, forgetThumbnails, token, whenUnauthorized } from "./api.js";
import { $, show } from "./dom.js";
import { actionFor, loadEntity, renderEntity } from "./entity.js";
import { card, filtersFrom, hashFor, loadList, localToIso } from "./list.js";
import { byImage, byText, showResults, showSearchError, similarTo } from "./search.js";

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
  show("image-search", signedIn && Boolean(feats && feats.image));
}

$("site-id").value = SITE;  // the site switcher shows the site the page is about (empty: the default one)
if (SITE) document.title = `reid-stream · ${SITE}`;

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
  $("f-source-label").hidden = !feats.archive;
  $("search-label").textContent = feats.search ? "Entity id, or a text to search for" : "Find entity by id";
  $("search-q").placeholder = feats.search ? "entity id, or e.g. person in a red coat" : "entity id";
}

function failure(err, where) {
  if (err.status === 401) return;  // signedOut() has said it
  if (err.status === 503) {
    banner("Degraded: storage (Redis) is unavailable. Entity pages cannot be read until it returns.");
  } else if (err.status === 0) {
    banner(`Degraded: ${err.message}.`);
  }
  $(where).textContent = err.status === 404 ? err.message : `Error: ${explain(err)}`;
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

function listFilters() {
  const f = filtersFrom(new URLSearchParams(location.hash.split("?")[1] || ""));
  if (feats && !feats.archive) f.source = "";  // a link made on a worker with the archive, opened on one without
  return f;
}

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  location.hash = hashFor({ ...listFilters(), entity_type: $("f-type").value, camera_id: $("f-camera").value.trim(),
                            since: localToIso($("f-since").value), source: $("f-source").value, offset: 0 });
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
  $("outcome").replaceChildren();
  $("outcome-box").hidden = true;
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

// What a merge or split left: the entities of the answer, as cards (a split's new entity among them).
function outcome(entities, title) {
  $("outcome-title").textContent = title;
  $("outcome").replaceChildren(...entities.map(card));
  $("outcome-box").hidden = !entities.length;
}

for (const form of document.querySelectorAll("#actions .act")) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const status = $("entity-status");
    const act = actionFor(form, current, feats);
    if (act.error) { status.textContent = act.error; return; }
    if (act.ask && !(await confirmed(act.ask))) { status.textContent = "Cancelled."; return; }
    let data;
    try {
      ({ data } = await api.send(act.method, act.path, act.body));
    } catch (err) {
      status.textContent = `Could not ${act.verb}: ${explain(err)}`;
      return;
    }
    if (act.leave) { flash = `${act.done} (${current.id})`; location.hash = "#/"; return; }
    if (data && Array.isArray(data.appearances)) {
      // PATCH answers the entity as it is now: shown as it is, no second request.
      current = data;
      renderEntity(current, feats);
      status.textContent = act.done;
      return;
    }
    // Merge and split answer {update, entities} (summaries, without appearances): the cards say what the
    // correction left, and the page reloads the survivor for its timeline.
    const update = (data && data.update) || {};
    const entities = (data && data.entities) || [];
    $("merge-input").value = "";
    await showEntity(update.survivor || current.id);
    outcome(entities, update.type === "split" ? `Now two entities: this one and ${update.created}`
      : `Now one entity: ${update.survivor}`);
    status.textContent = update.type === "split" ? `${act.done} New entity: ${update.created}.` : act.done;
  });
}

// --- search --------------------------------------------------------------------------------------

const NO_TEXT_TOWER = "This worker's encoder cannot search by text: its model has no text tower (only CLIP "
  + "models with one can). Open an entity by its id, use \"Find similar\" on an appearance, or search by image.";

// Each search shows its answer only if no other search started since (answers can arrive out of order).
let searchSeq = 0;

function searching(title, note = "") {
  view("search-view");
  $("search-title").textContent = title;
  $("search-note").textContent = note;
  $("search-note").hidden = !note;
  $("search-results").replaceChildren();
  $("search-status").classList.remove("error");
  $("search-status").textContent = "Searching…";
  return ++searchSeq;
}

async function runSearchWith(seq, title, run, explainError) {
  try {
    const answer = await run();
    if (seq === searchSeq) showResults(title, answer, feats);
    return answer;
  } catch (err) {
    if (err.status !== 401 && seq === searchSeq) showSearchError(title, explainError(err));
    return null;
  }
}

function runSimilar(detectionId) {
  const title = `Appearances like ${detectionId}`;
  return runSearchWith(searching(title), title, () => similarTo(detectionId, feats),
    (err) => `Could not find similar appearances: ${explain(err)}`);
}

function runSearch(text, missingId) {
  $("search-q").value = text;
  const title = `Appearances like "${text}"`;
  const seq = searching(title, missingId ? `No entity has the id "${text}", so it was searched for as a text.` : "");
  return runSearchWith(seq, title, () => byText(text, feats),
    (err) => (err.code === "text_search_unavailable" ? NO_TEXT_TOWER : `Could not search: ${explain(err)}`));
}

let lastImage = null;  // {title, answer}: an upload is not in the URL, so "#/image" shows the last one

async function runImageSearch(file) {
  const title = `Appearances like ${file.name}`;
  lastImage = { title, answer: null };  // pending: the route below leaves the view to this search
  location.hash = "#/image";
  const seq = searching(title);
  const answer = await runSearchWith(seq, title, () => byImage(file),
    (err) => `Could not search by image: ${explain(err)}`);
  if (seq === searchSeq) lastImage = answer ? { title, answer } : null;
}

$("image-file").addEventListener("change", () => {
  const file = $("image-file").files[0];
  if (file) runImageSearch(file);
  $("image-file").value = "";
});

// An entity id opens the entity (as before there was any search); where the worker searches by text,
// anything that is no entity's id is searched for as a text.
$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  const entityHash = `#/entity/${encodeURIComponent(q)}`;
  if (!feats || !feats.search) { location.hash = entityHash; return; }
  try {
    await loadEntity(q);
    location.hash = entityHash;
  } catch (err) {
    if (err.status === 404 || err.status === 422) location.hash = `#/search?text=${encodeURIComponent(q)}&missing=1`;
    else if (err.status !== 401) location.hash = entityHash;  // its page says what went wrong
  }
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
  } else if (hash.startsWith("#/similar/") && feats.similar) {
    runSimilar(decodeURIComponent(hash.slice("#/similar/".length)));
  } else if (hash.startsWith("#/search") && feats.search) {
    const p = new URLSearchParams(hash.split("?")[1] || "");
    runSearch(p.get("text") || p.get("q") || "", p.get("missing") === "1");
  } else if (hash === "#/image" && feats.image) {
    view("search-view");
    if (lastImage && lastImage.answer) {
      searching(lastImage.title);
      showResults(lastImage.title, lastImage.answer, feats);
    } else if (!lastImage) {
      searching("Search by image");
      showSearchError("Search by image", "Choose a picture (JPEG or PNG) with \"Search by image\" above.");
    }
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
