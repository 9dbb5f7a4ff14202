// A batch's page: its counts, its GUIDs grouped by outcome with the fault reason, a filter,
// report downloads and Close. Refreshed every few seconds while the batch is open.
"use strict";

const GROUPS = [
  ["failed", "Failed"],
  ["in_progress", "In a slot"],
  ["interrupted", "Interrupted (resumes when seen)"],
  ["reflashed", "Reflashed"],
  ["already_current", "Already current"],
  ["not_received", "Not received"],
  ["pending", "Not seen yet"],
];
const batchId = decodeURIComponent(location.pathname.split("/").pop());
const base = "/api/v1/batches/" + encodeURIComponent(batchId);

function group(view) {
  return view.outcome || view.status;
}

function fault(view) {
  if (!view.failure_code) return "";
  return view.failure_stage + " · " + view.failure_code + (view.failure_detail ? ": " + view.failure_detail : "");
}

function row(view) {
  const tr = jig.el("tr");
  tr.dataset.guid = view.guid;
  const cells = [
    view.guid,
    view.model || "",
    (view.from_version || "?") + (view.to_version ? " → " + view.to_version : ""),
    view.attempts,
    view.rig ? "rig " + view.rig + " slot " + view.slot : "",
    fault(view),
  ];
  for (const text of cells) tr.appendChild(jig.el("td", null, text));
  tr.dataset.text = cells.join(" ").toLowerCase();
  return tr;
}

function showGuids(views) {
  const area = document.getElementById("groups");
  jig.clear(area);
  for (const [name, title] of GROUPS) {
    const members = views.filter(function (v) { return group(v) === name; });
    if (!members.length) continue;
    const section = jig.el("section", "group g-" + name);
    section.dataset.group = name;
    section.appendChild(jig.el("h2", null, title + " (" + members.length + ")"));
    const table = jig.el("table");
    const head = jig.el("tr");
    for (const h of ["GUID", "Device Model", "firmware", "attempts", "where", "fault"]) {
      head.appendChild(jig.el("th", null, h));
    }
    table.appendChild(jig.el("thead")).appendChild(head);
    const body = jig.el("tbody");
    for (const view of members) body.appendChild(row(view));
    table.appendChild(body);
    section.appendChild(table);
    area.appendChild(section);
  }
  filter();
}

function filter() {
  const words = document.getElementById("filter").value.toLowerCase().trim();
  for (const tr of document.querySelectorAll("#groups tbody tr")) {
    tr.hidden = words !== "" && !tr.dataset.text.includes(words);
  }
}

function showSummary(b) {
  document.getElementById("title").textContent = "batch " + b.batch;
  document.title = "jigd batch " + b.batch;
  const area = document.getElementById("summary");
  jig.clear(area);
  const line = jig.el("p", "batch-line");
  line.appendChild(jig.el("b", "status s-" + b.status, b.status));
  line.appendChild(document.createTextNode(" · booking " + b.booking + " · party " + b.party +
    " · " + b.source + " · created " + b.created_at.slice(0, 19).replace("T", " ") + " UTC"));
  area.appendChild(line);
  const done = b.expected - b.pending;
  const bar = jig.el("div", "bar big");
  const fill = jig.el("div", "fill");
  fill.style.width = (b.expected ? 100 * done / b.expected : 0) + "%";
  bar.appendChild(fill);
  area.appendChild(bar);
  const counts = jig.el("ul", "counts");
  for (const [name, count] of Object.entries(b.counts)) {
    const item = jig.el("li", "count o-" + name);
    item.appendChild(jig.el("b", null, count));
    item.appendChild(document.createTextNode(" " + name.replace("_", " ")));
    counts.appendChild(item);
  }
  const pending = jig.el("li", "count");
  pending.appendChild(jig.el("b", null, b.pending));
  pending.appendChild(document.createTextNode(" pending of " + b.expected));
  counts.appendChild(pending);
  area.appendChild(counts);
  if (b.set_aside && b.set_aside.length) {
    area.appendChild(jig.el("p", "setaside", "Set aside, re-insert: " +
      b.set_aside.map(function (h) { return h.guid; }).join(", ")));
  }
  document.getElementById("close").hidden = b.status !== "open";
}

async function load() {
  const batch = await jig.api(base);
  if (!batch.ok) {
    jig.notice(jig.errorLines(batch).join("; "), "error");
    return false;
  }
  showSummary(batch.body);
  const guids = await jig.api(base + "/guids");
  if (guids.ok) showGuids(guids.body.guids);
  return batch.body.status === "open";
}

document.addEventListener("DOMContentLoaded", async function () {
  for (const link of document.querySelectorAll(".downloads a")) {
    link.href = base + "/report/" + link.dataset.file;
    link.setAttribute("download", batchId + "-" + link.dataset.file);
  }
  document.getElementById("filter").addEventListener("input", filter);
  document.getElementById("close").addEventListener("click", async function () {
    if (!window.confirm("Close batch " + batchId + "? GUIDs never seen become not_received.")) return;
    const result = await jig.api(base + "/close", { method: "POST" });
    if (result.ok) {
      jig.notice("Batch " + batchId + " closed.", "info");
      load();
    } else {
      jig.refused(result);
      if (result.status !== 403) jig.notice(jig.errorLines(result).join("; "), "error");
    }
  });
  const open = await load();
  if (open) {
    const timer = setInterval(async function () {
      if (!(await load())) clearInterval(timer);
    }, 5000);
  }
});
