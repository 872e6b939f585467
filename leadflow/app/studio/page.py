"""The page ``leadflow studio`` serves: HTML, script and style, kept here as text so the
package needs no data files.

The script never builds markup from data: every value from the API (template names, lead
data, problems, the text part) is set with ``textContent``; the rendered HTML only goes into
``srcdoc`` of iframes with an empty ``sandbox`` attribute (no scripts, no forms, an opaque
origin). The page itself allows only its own script (see ``app.CSP``).
"""

from __future__ import annotations

from typing import Final

PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leadflow studio</title>
<link rel="stylesheet" href="/studio.css">
<script src="/studio.js" defer></script>
</head>
<body>
<header>
  <h1>leadflow studio</h1>
  <span id="status" role="status">connecting…</span>
</header>
<div id="layout">
<nav>
  <h2>Templates</h2>
  <ul id="templates"></ul>
  <h2>Lead</h2>
  <form id="lead-form">
    <input id="lead" type="email" placeholder="sample lead (or a lead's email)"
           autocomplete="off" spellcheck="false">
    <button type="submit">Render</button>
    <button type="button" id="sample">Sample</button>
  </form>
  <p id="lead-shown" class="muted">the sample lead</p>
</nav>
<main>
  <div id="subject-line"><span class="label">Subject</span> <span id="subject"></span></div>
  <ul id="problems" hidden></ul>
  <div id="views" role="group" aria-label="width">
    <button type="button" data-view="both" aria-pressed="true">Desktop + phone</button>
    <button type="button" data-view="desktop" aria-pressed="false">Desktop</button>
    <button type="button" data-view="phone" aria-pressed="false">Phone</button>
    <span id="timing" class="muted"></span>
  </div>
  <div id="frames" class="both">
    <figure id="desktop-figure"><figcaption>Desktop (800 px)</figcaption>
      <iframe id="desktop" sandbox="" title="HTML part at desktop width"></iframe></figure>
    <figure id="phone-figure"><figcaption>Phone (375 px)</figcaption>
      <iframe id="phone" sandbox="" title="HTML part at phone width"></iframe></figure>
  </div>
  <h2>Text part</h2>
  <pre id="text"></pre>
  <h2>Send a test</h2>
  <form id="send-form">
    <input id="to" type="email" placeholder="you@example.com" required autocomplete="email">
    <button type="submit">Send test</button>
    <span id="send-result" role="status"></span>
  </form>
  <p class="muted">Sent through the configured SMTP server with the subject marked [test],
  rendered as shown here: for a chosen lead, the test carries that lead's data to the address
  you type. Its unsubscribe link is a placeholder (example.invalid) that does nothing; at most
  10 test sends a minute.</p>
  <h2>Variables</h2>
  <table id="variables"><thead><tr><th>name</th><th>sample value</th></tr></thead>
  <tbody></tbody></table>
  <h2>Filters</h2>
  <ul id="filters"></ul>
</main>
</div>
</body>
</html>
"""

STYLE: Final = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #1d232b; background: #f4f5f7; }
header { display: flex; gap: 1rem; align-items: baseline; padding: .5rem 1rem;
  background: #1d232b; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
#status { font-size: .85rem; opacity: .85; }
#layout { display: flex; align-items: flex-start; }
nav { width: 16rem; flex: none; padding: .5rem 1rem; border-right: 1px solid #d8dbe0;
  background: #fff; min-height: calc(100vh - 2.5rem); }
main { flex: 1; padding: .5rem 1rem; min-width: 0; }
h2 { font-size: .9rem; margin: 1rem 0 .3rem; text-transform: uppercase; color: #5b6572; }
#templates { list-style: none; padding: 0; margin: 0; }
#templates button { width: 100%; text-align: left; border: 0; background: none;
  padding: .25rem .4rem; cursor: pointer; font: inherit; }
#templates button[aria-current="true"] { background: #dce8ff; font-weight: 600; }
#lead-form input, #send-form input { width: 14rem; padding: .25rem; }
.muted { color: #6b7480; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; font-size: .8rem; }
th, td { text-align: left; padding: .1rem .3rem; border-bottom: 1px solid #eceef1;
  vertical-align: top; word-break: break-word; }
td:first-child { font-family: ui-monospace, monospace; width: 40%; }
#filters { padding-left: 1rem; font-size: .8rem; }
#subject-line { font-size: 1.1rem; padding: .4rem 0; }
#subject-line .label { font-size: .8rem; color: #6b7480; text-transform: uppercase; }
#problems { background: #fff1f0; border: 1px solid #f1a9a0; padding: .4rem .4rem .4rem 1.6rem;
  margin: .3rem 0; }
#problems li { margin: .2rem 0; }
#problems .where { font-family: ui-monospace, monospace; font-weight: 600; }
#problems code { display: block; white-space: pre-wrap; background: #fff; padding: .1rem .3rem;
  margin-top: .1rem; }
#views { margin: .4rem 0; }
#views button[aria-pressed="true"] { background: #1d232b; color: #fff; }
#frames { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; overflow-x: auto; }
#frames figure { margin: 0; }
#frames figcaption { font-size: .8rem; color: #6b7480; }
#frames iframe { border: 1px solid #c9ced6; background: #fff; height: 70vh; }
#desktop { width: 800px; }
#phone { width: 375px; }
#frames.desktop #phone-figure, #frames.phone #desktop-figure { display: none; }
@media (max-width: 900px) {
  #layout { flex-direction: column; align-items: stretch; }
  #lead-form input, #send-form input { width: 100%; margin-bottom: .2rem; }
  nav { width: auto; min-height: 0; border-right: 0; border-bottom: 1px solid #d8dbe0; }
  #phone { width: min(375px, calc(100vw - 2.5rem)); }
}
#text { background: #fff; border: 1px solid #d8dbe0; padding: .5rem; white-space: pre-wrap;
  max-height: 30vh; overflow: auto; }
"""

SCRIPT: Final = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const state = { template: null, lead: "", generation: null, renders: 0 };

function say(text) { $("status").textContent = text; }

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = {};
  try { body = await response.json(); } catch (e) { body = {}; }
  if (!response.ok) {
    throw new Error(body.error || (body.detail && JSON.stringify(body.detail)) ||
                    response.status + " " + response.statusText);
  }
  return body;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

async function loadTemplates() {
  const data = await getJSON("/api/templates");
  const list = $("templates");
  clear(list);
  for (const name of data.templates) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.template = name;
    button.setAttribute("aria-current", String(name === state.template));
    button.addEventListener("click", () => choose(name));
    item.appendChild(button);
    list.appendChild(item);
  }
  if (state.template === null && data.templates.length) choose(data.templates[0]);
  say("templates: " + data.folder + " (watching by " + data.watch + ")");
}

function choose(name) {
  state.template = name;
  for (const button of $("templates").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.template === name));
  }
  render("");
}

function showProblems(problems) {
  const list = $("problems");
  clear(list);
  list.hidden = problems.length === 0;
  for (const problem of problems) {
    const item = document.createElement("li");
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = problem.file + (problem.line ? ":" + problem.line : "") + ": ";
    item.appendChild(where);
    item.appendChild(document.createTextNode(problem.message));
    if (problem.source) {
      const code = document.createElement("code");
      code.textContent = problem.source;
      item.appendChild(code);
    }
    list.appendChild(item);
  }
}

async function render(why) {
  if (state.template === null) return;
  const ticket = ++state.renders;  // only the latest request may paint: an older, slower
  const started = performance.now();  // answer (the first template's) must not overwrite it
  const query = new URLSearchParams({ template: state.template });
  if (state.lead) query.set("lead", state.lead);
  let data;
  try {
    data = await getJSON("/api/render?" + query.toString());
  } catch (error) {
    if (ticket !== state.renders) return;
    showProblems([{ file: state.template, line: 0, message: error.message, source: "" }]);
    return;
  }
  if (ticket !== state.renders) return;
  state.generation = data.generation;
  $("subject").textContent = data.subject === null ? "(not rendered)" : data.subject;
  $("text").textContent = data.text === null ? "" : data.text;
  const html = data.html === null ? "" : data.html;
  $("desktop").srcdoc = html;
  $("phone").srcdoc = html;
  showProblems(data.problems);
  $("lead-shown").textContent = data.lead ? "lead " + data.lead : "the sample lead";
  const took = Math.round(performance.now() - started);
  $("timing").textContent = (why ? why + ": " : "") + "rendered in " + data.render_ms +
    " ms (" + took + " ms with the round trip)";
  document.body.dataset.rendered = String(data.generation) + ":" + data.template;
  document.body.dataset.renderedAt = String(Date.now());  // when it was on screen
}

async function loadVariables() {
  const data = await getJSON("/api/variables");
  const body = $("variables").querySelector("tbody");
  clear(body);
  for (const row of data.variables) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = "{{ " + row.name + " }}";
    const sample = document.createElement("td");
    sample.textContent = row.sample === null ? "(none)" : String(row.sample);
    tr.appendChild(name);
    tr.appendChild(sample);
    body.appendChild(tr);
  }
  const filters = $("filters");
  clear(filters);
  for (const filter of data.filters) {
    const item = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = "| " + filter.name;
    item.appendChild(code);
    item.appendChild(document.createTextNode(" " + filter.doc));
    filters.appendChild(item);
  }
}

function listen() {
  const source = new EventSource("/events");
  source.addEventListener("change", async () => {
    await render("saved");  // first the email, then the list (a template may be new)
    await loadTemplates();
  });
  source.onerror = () => say("disconnected from the studio; retrying…");
  source.addEventListener("hello", (event) => {
    // a reconnect: render again if a save happened while the page was away
    if (state.generation !== null && Number(event.data) !== state.generation) {
      loadTemplates().then(() => render("reconnected")).catch((e) => say(e.message));
    }
  });
}

function setView(view) {
  $("frames").className = view;
  for (const button of $("views").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lead-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.lead = $("lead").value.trim();
    render("");
  });
  $("sample").addEventListener("click", () => {
    $("lead").value = "";
    state.lead = "";
    render("");
  });
  for (const button of $("views").querySelectorAll("button")) {
    button.addEventListener("click", () => setView(button.dataset.view));
  }
  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("send-result");
    result.textContent = "sending…";
    try {
      const data = await getJSON("/api/send-test", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ template: state.template, to: $("to").value,
                               lead: state.lead || null }),
      });
      result.textContent = data.to + ": " + data.outcome + " " + (data.code || "") + " " +
        data.detail + " (" + data.subject + ")";
    } catch (error) {
      result.textContent = error.message;
    }
  });
  if (window.innerWidth < 900) setView("phone");  // a narrow screen shows the phone width
  loadTemplates().catch((e) => say(e.message));
  loadVariables().catch((e) => say(e.message));
  listen();
});
"""
