// What both pages share: building DOM from data (text only, never HTML), the JSON API,
// the notice line and the log in form. Loaded before station.js or batch.js.
"use strict";

const jig = {};

// An element with a class and text; data is always set as text.
jig.el = function (tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
};

jig.clear = function (node) {
  while (node.firstChild) node.removeChild(node.firstChild);
};

// fetch with the session cookie; the body parsed as JSON when it is JSON.
jig.api = async function (path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = null;
  if ((response.headers.get("Content-Type") || "").includes("application/json")) {
    body = await response.json();
  }
  return { ok: response.ok, status: response.status, body: body };
};

jig.notice = function (text, kind) {
  const node = document.getElementById("notice");
  node.textContent = text || "";
  node.dataset.kind = kind || "info";
  node.hidden = !text;
};

// "error; problem 1; problem 2" of an ErrorResponse as a list of lines.
jig.errorLines = function (result) {
  const body = result.body || {};
  const lines = [body.error || "HTTP " + result.status];
  return lines.concat(body.problems || []);
};

jig.duration = function (seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 120) return m + " min " + (s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
};

jig.loggedIn = false;

// The session area: a log in form, or who is logged in and a log out button.
jig.session = async function () {
  const result = await jig.api("/api/v1/session");
  jig.loggedIn = Boolean(result.body && result.body.logged_in);
  const area = document.getElementById("session");
  jig.clear(area);
  document.body.dataset.session = jig.loggedIn ? "yes" : "no";
  if (jig.loggedIn) {
    area.appendChild(jig.el("span", "who", "logged in"));
    const out = jig.el("button", "small", "Log out");
    out.type = "button";
    out.addEventListener("click", async function () {
      await jig.api("/api/v1/logout", { method: "POST" });
      jig.session();
    });
    area.appendChild(out);
    return;
  }
  const form = jig.el("form", "login");
  form.id = "login";
  const label = jig.el("label", null, "Token ");
  const input = jig.el("input");
  input.type = "password";
  input.name = "token";
  input.autocomplete = "current-password";
  input.required = true;
  label.appendChild(input);
  form.appendChild(label);
  const button = jig.el("button", "small", "Log in");
  button.type = "submit";
  form.appendChild(button);
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const result = await jig.api("/api/v1/login", { method: "POST", body: new FormData(form) });
    if (result.ok) {
      jig.notice("");
      jig.session();
    } else {
      jig.notice(jig.errorLines(result).join("; "), "error");
    }
  });
  area.appendChild(form);
};

// A refused change: 403 says how to log in.
jig.refused = function (result) {
  if (result.status === 403) {
    jig.notice("Not allowed (HTTP 403): " + jig.errorLines(result)[0], "error");
    jig.session();
  }
};

document.addEventListener("DOMContentLoaded", function () {
  jig.session();
});
