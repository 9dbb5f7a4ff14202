// The station page: rigs and slots, open batches, import, alerts; kept live by /api/v1/events.
"use strict";

const WORDS = {
  busy: "busy", done: "done", failed: "failed", rejected: "rejected",
  attention: "attention", empty: "empty", offline: "offline", disabled: "disabled",
};
const OUTCOMES = ["reflashed", "already_current", "failed", "not_received"];
const slots = new Map(); // "rig:slot" -> {view, at}
const rigsUp = new Map();

function key(rig, slot) {
  return rig + ":" + slot;
}

// Seconds now, counted on from what the daemon said `at` (ms) ago.
function since(seconds, at) {
  return seconds + (Date.now() - at) / 1000;
}

function tileText(tile, view, at) {
  jig.clear(tile);
  // Out of service: "disabled" with the reason, unless it is finishing its hub (busy).
  const disabled = view.disabled && view.state !== "busy" ? view.disabled : null;
  const state = disabled ? "disabled" : view.state;
  tile.dataset.state = state;
  const head = jig.el("div", "tile-head");
  head.appendChild(jig.el("span", "dot"));
  head.appendChild(jig.el("span", "state", WORDS[state] || state));
  if (view.suspect) head.appendChild(jig.el("span", "suspect", "SUSPECT"));
  head.appendChild(jig.el("span", "slotno", "S" + view.slot));
  tile.appendChild(head);
  tile.dataset.suspect = view.suspect ? "yes" : "no";
  tile.appendChild(jig.el("div", "guid", view.guid || (state === "empty" ? "no hub" : "")));
  tile.appendChild(jig.el("div", "model", view.model || ""));
  let stage = view.stage ? view.stage.replace("_", " ") : "";
  if (view.outcome) stage = view.outcome.replace("_", " ");
  if (view.stage === "upload") stage += " " + view.progress.toFixed(1) + "%";
  tile.appendChild(jig.el("div", "stage", stage));
  const bar = jig.el("div", "bar");
  const fill = jig.el("div", "fill");
  fill.style.width = (view.stage === "upload" ? view.progress : (view.outcome ? 100 : 0)) + "%";
  bar.appendChild(fill);
  tile.appendChild(bar);
  const foot = jig.el("div", "foot");
  foot.appendChild(jig.el("span", "time", timeText(view, at)));
  if (view.attempts > 0) foot.appendChild(jig.el("span", "attempt", "attempt " + view.attempts));
  tile.appendChild(foot);
  if (disabled) {
    tile.appendChild(jig.el("div", "detail", "disabled: " + disabled.reason + " (" + disabled.by + ")"));
  } else if (view.detail && state !== "busy") {
    tile.appendChild(jig.el("div", "detail", view.detail));
  }
  tile.title = disabled ? disabled.reason : view.suspect ? "suspect: " + view.suspect : (view.detail || "");
}

function timeText(view, at) {
  if (view.wait) {
    const waited = Math.min(since(view.wait.waited_s, at), view.wait.limit_s);
    return "waiting for " + view.wait.what + " " + Math.round(waited) + "/" +
      Math.round(view.wait.limit_s) + " s";
  }
  if (view.state !== "busy" || view.elapsed_s === null || view.elapsed_s === undefined) return "";
  const elapsed = jig.duration(since(view.elapsed_s, at));
  return view.expected_s ? elapsed + " of ~" + jig.duration(view.expected_s) : elapsed;
}

function rigCard(rig) {
  const card = jig.el("section", "rig");
  card.id = "rig-" + rig.rig;
  card.dataset.up = rig.up ? "yes" : "no";
  const head = jig.el("h2", "rig-head", "Rig " + rig.rig + " ");
  head.appendChild(jig.el("span", "rig-state", rig.up ? "up" : "offline"));
  card.appendChild(head);
  const tiles = jig.el("div", "tiles");
  for (const view of rig.slots) {
    const tile = jig.el("article", "tile");
    tile.dataset.rig = view.rig;
    tile.dataset.slot = view.slot;
    tile.id = "slot-" + view.rig + "-" + view.slot;
    tiles.appendChild(tile);
  }
  card.appendChild(tiles);
  return card;
}

function showSlot(view, at) {
  slots.set(key(view.rig, view.slot), { view: view, at: at });
  const tile = document.getElementById("slot-" + view.rig + "-" + view.slot);
  if (tile) tileText(tile, view, at);
}

function showRig(rig, up) {
  rigsUp.set(rig, up);
  const card = document.getElementById("rig-" + rig);
  if (!card) return;
  card.dataset.up = up ? "yes" : "no";
  card.querySelector(".rig-state").textContent = up ? "up" : "offline";
}

function showBatches(batches) {
  const area = document.getElementById("batches");
  jig.clear(area);
  if (!batches.length) area.appendChild(jig.el("p", "quiet", "No open batch: import a manifest."));
  for (const b of batches) {
    const panel = jig.el("div", "batchpanel");
    panel.dataset.batch = b.batch;
    const title = jig.el("div", "batch-title");
    const link = jig.el("a", null, b.batch);
    link.href = "/batches/" + encodeURIComponent(b.batch);
    title.appendChild(link);
    title.appendChild(jig.el("span", "booking", " " + b.booking + " · " + b.party));
    panel.appendChild(title);
    const done = b.expected - b.pending;
    const bar = jig.el("div", "bar big");
    const fill = jig.el("div", "fill");
    fill.style.width = (b.expected ? (100 * done / b.expected) : 0) + "%";
    bar.appendChild(fill);
    panel.appendChild(bar);
    panel.appendChild(jig.el("div", "progress",
      done + " of " + b.expected + " done · " + b.busy_slots + " busy · ETA " +
      (b.eta_s === null ? "unknown" : jig.duration(b.eta_s))));
    const counts = jig.el("ul", "counts");
    for (const outcome of OUTCOMES) {
      const item = jig.el("li", "count o-" + outcome);
      item.appendChild(jig.el("b", null, b.counts[outcome] || 0));
      item.appendChild(document.createTextNode(" " + outcome.replace("_", " ")));
      counts.appendChild(item);
    }
    const pending = jig.el("li", "count");
    pending.appendChild(jig.el("b", null, b.pending));
    pending.appendChild(document.createTextNode(" pending"));
    counts.appendChild(pending);
    panel.appendChild(counts);
    if (b.set_aside && b.set_aside.length) {
      const aside = jig.el("div", "setaside");
      aside.appendChild(jig.el("b", null, "Set aside, re-insert (" + b.set_aside.length + "):"));
      const list = jig.el("ul");
      for (const hub of b.set_aside) {
        list.appendChild(jig.el("li", null, hub.guid + " (was rig " + hub.rig + " slot " + hub.slot + ")"));
      }
      aside.appendChild(list);
      panel.appendChild(aside);
    }
    area.appendChild(panel);
  }
}

function addAlert(alert, first) {
  const list = document.getElementById("alerts");
  const item = jig.el("li", "alert");
  item.appendChild(jig.el("time", null, alert.ts.slice(11, 19)));
  item.appendChild(document.createTextNode(" " + alert.message));
  if (first) list.insertBefore(item, list.firstChild);
  else list.appendChild(item);
  while (list.children.length > 50) list.removeChild(list.lastChild);
}

function snapshot(data) {
  const status = data.status;
  document.getElementById("station").textContent = status.station;
  document.title = "jigd " + status.station;
  const area = document.getElementById("rigs");
  jig.clear(area);
  const at = Date.now();
  for (const rig of status.rigs) {
    area.appendChild(rigCard(rig));
    rigsUp.set(rig.rig, rig.up);
    for (const view of rig.slots) showSlot(view, at);
  }
  showBatches(status.batches);
  figures(status);
  const list = document.getElementById("alerts");
  jig.clear(list);
  for (const entry of status.catalog_rejected) {
    addAlert({ ts: "", message: "catalog entry " + entry.model + " " + entry.firmware_version +
      " never flashed (" + entry.code + "): " + entry.reason }, false);
  }
  for (const alert of data.alerts) addAlert(alert, true);
}

function figures(status) {
  const text = (status.hubs_per_hour === null ? "–" : status.hubs_per_hour) + " hubs/h · loop lag p99 " +
    status.loop_lag_ms.p99 + " ms";
  document.getElementById("figures").textContent = text;
}

function connect() {
  const link = document.getElementById("link");
  const events = new EventSource("/api/v1/events");
  events.addEventListener("open", function () {
    link.textContent = "live";
    link.dataset.live = "yes";
  });
  events.addEventListener("error", function () {
    link.textContent = "reconnecting";
    link.dataset.live = "no";
  });
  events.addEventListener("snapshot", function (e) { snapshot(JSON.parse(e.data)); });
  events.addEventListener("slot", function (e) { showSlot(JSON.parse(e.data), Date.now()); });
  events.addEventListener("rig", function (e) {
    const data = JSON.parse(e.data);
    showRig(data.rig, data.up);
  });
  events.addEventListener("batches", function (e) { showBatches(JSON.parse(e.data)); });
  events.addEventListener("alert", function (e) { addAlert(JSON.parse(e.data), true); });
}

// Elapsed and waiting times count on between events.
function tick() {
  for (const entry of slots.values()) {
    const view = entry.view;
    if (view.state !== "busy" && !view.wait) continue;
    const tile = document.getElementById("slot-" + view.rig + "-" + view.slot);
    const time = tile && tile.querySelector(".time");
    if (time) time.textContent = timeText(view, entry.at);
  }
}

function importForm() {
  const form = document.getElementById("import");
  const out = document.getElementById("import-result");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    jig.clear(out);
    out.dataset.kind = "";
    const result = await jig.api("/api/v1/batches", { method: "POST", body: new FormData(form) });
    if (result.ok) {
      out.dataset.kind = "ok";
      const line = jig.el("p", null, "Imported batch ");
      const link = jig.el("a", null, result.body.batch);
      link.href = "/batches/" + encodeURIComponent(result.body.batch);
      line.appendChild(link);
      line.appendChild(document.createTextNode(" (" + result.body.guids + " GUIDs)."));
      out.appendChild(line);
      form.reset();
      return;
    }
    out.dataset.kind = "error";
    jig.refused(result);
    const lines = jig.errorLines(result);
    out.appendChild(jig.el("p", "error", lines[0]));
    if (lines.length > 1) {
      const list = jig.el("ul", "problems");
      for (const line of lines.slice(1)) list.appendChild(jig.el("li", null, line));
      out.appendChild(list);
    }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  importForm();
  connect();
  setInterval(tick, 1000);
});
