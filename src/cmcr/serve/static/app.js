// cmcr search page: text box, drag-and-drop of an image or a sound, results grid, more-like-this.
"use strict";

const $ = (id) => document.getElementById(id);
// query: {kind: "text"|"file"|"like", value, label}; ticket numbers searches so that only the
// latest one may draw (a slow upload answered after a newer text query must not replace it).
// results: the hits shown now, as the API gave them (what the export buttons write).
const state = { query: null, offset: 0, ticket: 0, controller: null, results: [] };

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the server's token (cmcr serve --token): asked once, kept for this browser session --------
const TOKEN_KEY = "cmcr-token";

function authorised(options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return options;
  return { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } };
}

async function call(url, options = {}) {
  const response = await fetch(url, authorised(options));
  if (response.status === 401) askToken(sessionStorage.getItem(TOKEN_KEY) ? "that token was refused" : "");
  return response;
}

function askToken(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-why").textContent = why ? `(${why})` : "";
  $("token-form").hidden = false;
  $("token").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("token-form").hidden = true;
  loadInfo();
});

async function loadInfo() {
  try {
    const response = await call("/api/info");
    if (response.status === 401) return;
    const info = await response.json();
    const counts = {};
    for (const c of info.collections) counts[c.modality] = (counts[c.modality] || 0) + c.rows;
    const parts = Object.entries(counts).map(([m, n]) => `${n.toLocaleString()} ${m}`);
    $("index-info").textContent = `${info.rows.toLocaleString()} rows (${parts.join(", ")}) in a ` +
      `${info.dim}-d joint space · spaces: ${Object.keys(info.spaces).join(", ") || "—"}`;
    $("modality").replaceChildren(el("option", { value: "", text: "everything" }));
    for (const modality of info.modalities) {
      $("modality").append(el("option", { value: modality, text: `only ${modality}` }));
    }
  } catch (error) {
    showError(`cannot read /api/info: ${error}`);
  }
}

function showError(message) {
  $("status").textContent = message;
  $("status").className = "error";
}

function request(query, offset, signal) {
  const k = $("k").value, modality = $("modality").value;
  if (query.kind === "file") {
    const form = new FormData();
    form.append("file", query.value, query.value.name || "upload");
    form.append("k", k);
    form.append("offset", offset);
    if (modality) form.append("modality", modality);
    return call("/api/search", { method: "POST", body: form, signal });
  }
  const params = new URLSearchParams({ k, offset });
  params.set(query.kind === "text" ? "q" : "like", query.value);
  if (modality) params.set("modality", modality);
  return call(`/api/search?${params}`, { signal });
}

async function search(query, append = false) {
  const ticket = ++state.ticket;
  if (state.controller) state.controller.abort();  // the older search's answer is no longer wanted
  const controller = new AbortController();
  state.controller = controller;
  state.query = query;
  state.offset = append ? state.offset + Number($("k").value) : 0;
  $("status").className = "";
  $("status").textContent = `searching for ${query.label}…`;
  let answer;
  try {
    const response = await request(query, state.offset, controller.signal);
    answer = await response.json();
    if (ticket !== state.ticket) return;
    if (!response.ok) return failed(`${response.status}: ${answer.error || "request failed"}`);
  } catch (error) {
    if (ticket !== state.ticket) return;
    return failed(`the server did not answer: ${error}`);
  }
  if (!append) {
    $("results").replaceChildren();
    state.results = [];
  }
  for (const hit of answer.results) $("results").append(card(hit));
  state.results.push(...answer.results);
  const shown = $("results").children.length;
  const filter = $("modality").value ? ` among ${$("modality").value} rows` : "";
  $("status").textContent = `${shown} results for ${query.label}${filter} · ${answer.took_ms} ms`;
  $("legend").hidden = shown === 0;
  $("export").hidden = shown === 0;
  $("more").hidden = answer.results.length < Number($("k").value);
}

function failed(message) {
  // a failed search leaves no results of an earlier one under its message
  $("results").replaceChildren();
  state.results = [];
  $("more").hidden = true;
  $("legend").hidden = true;
  $("export").hidden = true;
  showError(message);
}

function fileName(hit) {
  const path = hit.path || hit.id;
  return path.split("/").pop();
}

function seconds(value) {
  return value < 60 ? `${value.toFixed(1)} s`
                    : `${Math.floor(value / 60)}:${String(Math.round(value % 60)).padStart(2, "0")}`;
}

function preview(hit) {
  if (hit.modality === "image" && hit.media_url) {
    return el("img", { src: hit.thumb_url, alt: hit.label || fileName(hit), loading: "lazy" });
  }
  if (hit.modality === "audio" && hit.media_url) {
    const box = el("div", { class: "sound" }, [
      el("img", { class: "spectrogram", src: hit.thumb_url, loading: "lazy",
                  alt: `spectrogram of ${hit.label || fileName(hit)}` })]);
    if (hit.duration) box.append(el("span", { class: "duration", text: seconds(hit.duration) }));
    box.append(el("audio", { controls: "", preload: "none", src: hit.media_url,
                             "aria-label": `play ${fileName(hit)}` }));
    return box;
  }
  return el("blockquote", { text: hit.text || hit.id });
}

function describe(hit) {
  // what the row is: its caption or label, then its file (full path on hover)
  const lines = [];
  if (hit.label) lines.push(el("div", { class: "label", text: hit.label }));
  if (hit.media_url) lines.push(el("div", { class: "name", text: fileName(hit), title: hit.path || hit.id }));
  else lines.push(el("div", { class: "name", text: `${hit.collection} · ${hit.id}` }));
  return lines;
}

// The bar is full at FULL_BAR_SIGMA standard deviations above the collection's typical row.
const FULL_BAR_SIGMA = 4;

function scoreText(hit) {
  return hit.calibrated === null || hit.calibrated === undefined
    ? hit.score.toFixed(3) : `${hit.calibrated.toFixed(1)}σ`;
}

function scoreMeaning(hit) {
  const cosine = `cosine ${hit.score.toFixed(3)} in the joint space`;
  if (hit.calibrated === null || hit.calibrated === undefined) return cosine;
  return `${hit.calibrated.toFixed(2)} standard deviations above a typical ${hit.modality} row ` +
         `of “${hit.collection}” for this query (${cosine})`;
}

function card(hit) {
  const fill = hit.calibrated === null || hit.calibrated === undefined
    ? hit.score : hit.calibrated / FULL_BAR_SIGMA;
  const width = (100 * Math.max(0, Math.min(1, fill))).toFixed(1);
  const more = `more like ${hit.modality} “${hit.id}”`;
  const node = el("article", { class: "result", "data-id": hit.id, "data-row": hit.row,
                                "data-modality": hit.modality, tabindex: "0",
                                "aria-label": `${hit.label || fileName(hit)}: Enter searches ${more}`,
                                title: "click or Enter: more like this" }, [
    preview(hit),
    el("div", { class: "meta" }, [el("span", { class: `badge ${hit.modality}`, text: hit.modality }),
                                  el("span", { class: "score", text: scoreText(hit),
                                               title: scoreMeaning(hit) })]),
    el("div", { class: "bar", title: scoreMeaning(hit) }, [el("i", { style: `width:${width}%` })]),
    ...describe(hit),
  ]);
  const searchLike = () => {
    showQuery(hit);
    search({ kind: "like", value: hit.row, label: more });
  };
  node.addEventListener("click", (event) => {
    if (event.target.tagName !== "AUDIO") searchLike();  // playing is not searching
  });
  node.addEventListener("keydown", (event) => {
    if (event.target === node && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      searchLike();
    }
  });
  return node;
}

// -- export: the results shown, as JSON (what the API gave) or CSV (one row a result) ----------
const CSV_COLUMNS = ["rank", "row", "id", "modality", "collection", "label", "path", "text",
                     "score", "calibrated", "duration"];

function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;  // no formulas
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function exported(format) {
  const rows = state.results.map((hit, index) => ({ rank: index + 1, ...hit }));
  if (format === "json") {
    const query = state.query && state.query.kind !== "file" ? state.query.value : null;
    return JSON.stringify({ query: state.query && state.query.label, text: query,
                            modality: $("modality").value || "everything", results: rows }, null, 2);
  }
  const lines = [CSV_COLUMNS.join(",")];
  for (const row of rows) lines.push(CSV_COLUMNS.map((column) => csvCell(row[column])).join(","));
  return lines.join("\r\n") + "\r\n";
}

function download(format) {
  const type = format === "json" ? "application/json" : "text/csv";
  const url = URL.createObjectURL(new Blob([exported(format)], { type }));
  const link = el("a", { href: url, download: `cmcr-results.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function showQuery(source) {
  const view = $("query-view");
  view.replaceChildren();
  if (source instanceof File) {
    const url = URL.createObjectURL(source);
    view.append(source.type.startsWith("image/") ? el("img", { src: url, alt: source.name })
                                                 : el("audio", { controls: "", src: url }));
    view.append(el("span", { text: `query: ${source.name}` }));
  } else if (source && source.media_url) {
    view.append(preview(source), el("span", { text: `query: ${source.modality} ${source.id}` }));
  } else {
    view.hidden = true;
    return;
  }
  view.hidden = false;
}

function searchFile(file) {
  if (!file) return;
  showQuery(file);
  search({ kind: "file", value: file, label: `“${file.name}”` });
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (!text) return showError("type a query, or drop an image or a sound");
  showQuery(null);
  search({ kind: "text", value: text, label: `“${text}”` });
});
$("modality").addEventListener("change", () => state.query && search(state.query));
$("more").addEventListener("click", () => state.query && search(state.query, true));

const zone = $("drop-zone");
zone.addEventListener("click", () => $("file").click());
zone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("file").click();
  }
});
$("export-json").addEventListener("click", () => download("json"));
$("export-csv").addEventListener("click", () => download("csv"));
$("file").addEventListener("change", () => searchFile($("file").files[0]));
for (const name of ["dragenter", "dragover"]) {
  zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
}
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  searchFile(event.dataTransfer.files[0]);
});

loadInfo();
