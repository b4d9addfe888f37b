// PrismQ Runner's web page: a client of prismqd's JSON routes (docs/http.md), one page
// with hash routes: #/modules (start forms built from each module's ParameterSpecs),
// #/runs (the runs, filtered and paged), #/runs/ID (one run: details, cancel, live
// output). Plain JavaScript, no library, nothing loaded from elsewhere. Text from the
// server only ever reaches the page as text nodes (textContent), never as markup.
// A module script (index.html): strict, deferred, its names its own. Laid out by
// clang-format-14 --style="{BasedOnStyle: Google, ColumnLimit: 100, JavaScriptQuotes: Leave}".
const STATUSES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"];
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"]);
const PAGE_SIZE = 25;
// The output view keeps the last MAX_LINES lines and MAX_CHARS characters; a line
// longer than MAX_LINE_CHARS goes on over several.
const MAX_LINES = 5000;
const MAX_CHARS = 2000000;
const MAX_LINE_CHARS = 8000;
const POLL_MS = 2000;
const SIGNALS = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM"
};

const main = document.getElementById("main");
let current = null;       // the view shown: {alive, cleanups}
let autoRefresh = false;  // the runs list's, kept while the page lives

// ---- helpers -------------------------------------------------------------------

// An element: attrs are attributes (values as strings; false/null/undefined left out,
// true as ""), except `on` ({event: handler}); children are nodes or strings (as
// text), arrays of them, or null.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (v !== false && v !== null && v !== undefined) {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c))
      append(el, c);
    else
      el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

function shortStatus(s) {
  return String(s || "").replace(/^RUN_STATUS_/, "") || "UNSPECIFIED";
}

function statusBadge(s, id) {
  const st = shortStatus(s);
  return h("span", {class: "status " + st, id: id}, st);
}

function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// A time in ms since the epoch as local YYYY-MM-DD HH:MM:SS, "—" for unset.
function fmtTime(ms) {
  const n = num(ms);
  if (n <= 0) return "—";
  const d = new Date(n);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms < 0) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  const s = Math.round(ms / 1000);
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// How long a run ran (or has been running), or "—".
function runDuration(run) {
  const start = num(run.startedAtMs);
  if (start <= 0) return "—";
  const end = num(run.finishedAtMs) > 0 ? num(run.finishedAtMs) : Date.now();
  return fmtDuration(end - start);
}

function fmtBytes(v) {
  const n = num(v);
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = n, i = -1;
  do {
    x /= 1024;
    i++;
  } while (x >= 1024 && i < units.length - 1);
  return x.toFixed(1) + " " + units[i];
}

function b64bytes(s) {
  const bin = atob(s || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// The fields of an encoded protobuf message: [[number, value]], value a number
// (varint) or a Uint8Array (length-delimited). Throws on malformed input.
function pbFields(bytes) {
  const out = [];
  let i = 0;
  const varint = () => {
    let n = 0, mul = 1, b;
    do {
      if (i >= bytes.length) throw new Error("truncated varint");
      b = bytes[i++];
      n += (b & 0x7f) * mul;
      mul *= 128;
    } while (b & 0x80);
    return n;
  };
  while (i < bytes.length) {
    const key = varint(), no = Math.floor(key / 8), wt = key % 8;
    if (wt === 0) {
      out.push([no, varint()]);
    } else if (wt === 2) {
      const len = varint();
      if (i + len > bytes.length) throw new Error("truncated field");
      out.push([no, bytes.subarray(i, i + len)]);
      i += len;
    } else if (wt === 1 || wt === 5) {
      i += wt === 1 ? 8 : 4;
    } else {
      throw new Error("unknown wire type");
    }
  }
  return out;
}

// The field violations of an error's details (google.rpc.BadRequest, as prismqd
// sends for bad StartRun parameters): [{field, description}].
function violations(details) {
  const out = [];
  const dec = new TextDecoder();
  for (const d of details || []) {
    if (!d || d.typeUrl !== "type.googleapis.com/google.rpc.BadRequest") continue;
    try {
      for (const [no, fv] of pbFields(b64bytes(d.value))) {
        if (no !== 1 || !(fv instanceof Uint8Array)) continue;
        const v = {field: "", description: ""};
        for (const [k, s] of pbFields(fv)) {
          if (k === 1 && s instanceof Uint8Array) v.field = dec.decode(s);
          if (k === 2 && s instanceof Uint8Array) v.description = dec.decode(s);
        }
        out.push(v);
      }
    } catch (e) {
      // Details we cannot read: the message says it all the same.
    }
  }
  return out;
}

class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

// One JSON call: resolves with the answer, or rejects with an ApiError carrying the
// server's message and field violations.
async function api(method, path, body) {
  const opts = {method: method, headers: {"Accept": "application/json"}, cache: "no-store"};
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "cannot reach the server: " + e.message, []);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const msg = data && typeof data.message === "string" ? data.message :
                                                           `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, msg, data ? violations(data.details) : []);
  }
  return data || {};
}

// An error box: the message, and the field violations not shown elsewhere.
function errorBox(err, fields) {
  const list = fields && fields.length ?
      h("ul", null,
        fields.map((v) => h("li", null, h("code", null, v.field), ": ", v.description))) :
      null;
  return h("div", {class: "error", role: "alert"}, err.message || String(err), list);
}

function setTitle(t) {
  document.title = t ? t + " · PrismQ Runner" : "PrismQ Runner";
}

// ---- routing -------------------------------------------------------------------

// A new view: the previous one's timers and streams end, and `main` is emptied.
function newView(nav) {
  if (current) {
    current.alive = false;
    for (const fn of current.cleanups) fn();
  }
  current = {alive: true, cleanups: []};
  main.replaceChildren();
  for (const a of document.querySelectorAll(".top nav a")) {
    a.classList.toggle("active", a.id === "nav-" + nav);
  }
  return current;
}

function hashQuery(q) {
  const p = new URLSearchParams(q || "");
  const s = p.toString();
  return s ? "?" + s : "";
}

function route() {
  const hash = location.hash || "#/modules";
  const q = hash.indexOf("?");
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
  let m;
  if (path === "#/modules" || path === "#/" || path === "#") {
    showModules(params);
  } else if (path === "#/runs") {
    showRuns(params);
  } else if ((m = /^#\/runs\/([^/]+)$/.exec(path))) {
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch (e) {
      id = m[1];
    }
    showRun(id);
  } else {
    newView("");
    setTitle("Not found");
    main.append(
        h("h1", null, "Not found"),
        h("p", null, "No such page. ", h("a", {href: "#/modules"}, "Modules"), " · ",
          h("a", {href: "#/runs"}, "Runs")));
  }
}

// ---- modules -------------------------------------------------------------------

async function listAll(path, key, max) {
  const out = [];
  let token = "";
  for (let i = 0; i < max; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page =
        await api("GET", path + (token ? sep + "page_token=" + encodeURIComponent(token) : ""));
    out.push(...(page[key] || []));
    token = page.nextPageToken || "";
    if (!token) break;
  }
  return out;
}

async function showModules(params) {
  const v = newView("modules");
  setTitle("Modules");
  const search = h("input", {
    type: "search",
    id: "module-search",
    placeholder: "Filter by name, tag, category…",
    "aria-label": "Filter modules",
    value: params.get("q") || ""
  });
  const cards = h("div", {class: "cards", id: "modules"});
  const status = h("p", {class: "muted"}, "Loading…");
  main.append(
      h("h1", null, "Modules"), h("div", {class: "toolbar"}, h("div", {class: "grow"}, search)),
      status, cards);
  let mods, presets = [];
  try {
    mods = (await api("GET", "/v1/modules")).modules || [];
  } catch (e) {
    if (!v.alive) return;
    status.replaceWith(errorBox(e));
    return;
  }
  try {
    presets = await listAll("/v1/presets?page_size=200", "presets", 20);
  } catch (e) {
    presets = [];  // the forms work without them
  }
  if (!v.alive) return;
  status.textContent = mods.length ? "" : "No modules are configured.";
  const byModule = new Map();
  for (const p of presets) {
    if (!byModule.has(p.moduleId)) byModule.set(p.moduleId, []);
    byModule.get(p.moduleId).push(p);
  }
  mods.forEach((m, i) => cards.append(moduleCard(m, i, byModule.get(m.id) || [])));
  const filter = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const card of cards.children) {
      const text = card.dataset.search;
      card.classList.toggle("hidden", !words.every((w) => text.includes(w)));
    }
  };
  search.addEventListener("input", filter);
  filter();
}

function truthy(s) {
  return /^(true|1|yes|on)$/i.test(String(s || ""));
}

// The control of one parameter, by its type.
function paramInput(p, id) {
  const type = p.type || "PARAMETER_TYPE_STRING";
  const common = {id: id, name: p.name, "data-param": p.name, "aria-describedby": id + "-err"};
  if (type === "PARAMETER_TYPE_BOOLEAN") {
    return h("input", Object.assign({type: "checkbox", checked: truthy(p.defaultValue)}, common));
  }
  if (type === "PARAMETER_TYPE_SELECT") {
    const sel = h("select", Object.assign({required: p.required}, common));
    if (!p.required || !p.defaultValue)
      sel.append(h("option", {value: ""}, p.required ? "— choose —" : "(default)"));
    for (const o of p.options || [])
      sel.append(h("option", {value: o, selected: o === p.defaultValue}, o));
    return sel;
  }
  const attrs =
      Object.assign({required: p.required, autocomplete: "off", spellcheck: "false"}, common);
  if (type === "PARAMETER_TYPE_INTEGER" || type === "PARAMETER_TYPE_NUMBER") {
    attrs.type = "number";
    attrs.step = type === "PARAMETER_TYPE_INTEGER" ? "1" : "any";
    if (p.min !== undefined && p.min !== null) attrs.min = p.min;
    if (p.max !== undefined && p.max !== null) attrs.max = p.max;
    attrs.inputmode = type === "PARAMETER_TYPE_INTEGER" ? "numeric" : "decimal";
  } else if (type === "PARAMETER_TYPE_SECRET") {
    attrs.type = "password";
    attrs.autocomplete = "new-password";
  } else {
    attrs.type = "text";
    if (type === "PARAMETER_TYPE_PATH" && p.baseDir) attrs.placeholder = "under " + p.baseDir;
  }
  // Lengths are the server's in bytes: maxlength (UTF-16 units, never more than the
  // bytes) never refuses what the server takes; a minimum is left to the server.
  if (p.maxLength > 0) attrs.maxlength = p.maxLength;
  // The server's pattern is a POSIX ERE; the browser's is a JavaScript one. Use it
  // where both read it the same way (a plain pattern), else let the server judge.
  if (p.pattern && validPattern(p.pattern)) attrs.pattern = p.pattern;
  const input = h("input", attrs);
  if (type !== "PARAMETER_TYPE_SECRET") input.value = p.defaultValue || "";
  return input;
}

// Whether the browser reads the server's pattern (an ERE, matched whole) as the
// server does: not with POSIX classes, GNU word boundaries or a backslash in brackets
// (a literal there in an ERE, an escape in JavaScript), and only if it compiles as the
// browser compiles a pattern attribute (flag v; else it would log an error).
function validPattern(pat) {
  if (/\[:|\\[<>]|\[[^\]]*\\/.test(pat)) return false;
  try {
    new RegExp("^(?:" + pat + ")$", "v");
    return true;
  } catch (e) {
    return false;
  }
}

function describeParam(p) {
  const bits = [];
  const type = (p.type || "PARAMETER_TYPE_STRING").replace(/^PARAMETER_TYPE_/, "").toLowerCase();
  bits.push(type === "unspecified" ? "string" : type);
  if (p.min !== undefined && p.min !== null) bits.push("≥ " + p.min);
  if (p.max !== undefined && p.max !== null) bits.push("≤ " + p.max);
  if (p.defaultValue && p.type !== "PARAMETER_TYPE_SECRET") bits.push("default " + p.defaultValue);
  return (p.description ? p.description + " · " : "") + bits.join(", ");
}

function moduleCard(m, index, presets) {
  const params = m.parameters || [];
  const inputs = new Map();  // name → control
  const errs = new Map();    // name → its error line
  const fields = params.map((p, i) => {
    const id = `m${index}-p${i}`;
    const input = paramInput(p, id);
    inputs.set(p.name, input);
    const err = h("div", {class: "field-error", id: id + "-err"});
    errs.set(p.name, err);
    const req = p.required ?
        h("span", {class: "req", title: "required", "aria-hidden": "true"}, "*") :
        null;
    const hint = h("span", {class: "hint"}, describeParam(p));
    if (input.type === "checkbox") {
      return h("div", {class: "field check"}, h("label", {for: id
               }, input, p.name, req), hint, err);
    }
    return h("div", {class: "field"}, h("label", {for: id
             }, p.name, req), hint, input, err);
  });

  let presetSel = null;
  if (presets.length) {
    presetSel =
        h("select", {id: `m${index}-preset`, class: "preset-select"},
          h("option", {value: ""}, "(none)"),
          presets.map(
              (p) =>
                  h("option", {value: p.name, title: p.description || ""},
                    p.name + (p.description ? " — " + p.description : ""))));
    // A preset fills the form: the module's defaults, then the preset's values. The
    // run is started with the preset named and the form's values over it.
    presetSel.addEventListener("change", () => {
      const chosen = presets.find((p) => p.name === presetSel.value);
      for (const p of params) {
        const input = inputs.get(p.name);
        const v = chosen && chosen.parameters && p.name in chosen.parameters ?
            chosen.parameters[p.name] :
            (p.type === "PARAMETER_TYPE_SECRET" ? "" : p.defaultValue || "");
        if (input.type === "checkbox")
          input.checked = truthy(v);
        else
          input.value = v;
      }
    });
  }
  const labels = h("textarea", {
    id: `m${index}-labels`,
    class: "labels-input",
    rows: "2",
    placeholder: "key=value, one a line",
    spellcheck: "false",
    "aria-describedby": `m${index}-labels-err`
  });
  const labelsErr = h("div", {class: "field-error", id: `m${index}-labels-err`});
  const formErr = h("div");
  const submit = h("button", {type: "submit", disabled: m.enabled === false}, "Start");
  const form =
      h("form", {class: "start-form", "data-module": m.id}, fields,
        presetSel ? h("div", {class: "field"},
                      h("label",
                        {for: presetSel.id
                        },
                        "preset"),
                      presetSel) :
                    null,
        h("div", {class: "field"},
          h("label",
            {for: labels.id
            },
            "labels"),
          labels, labelsErr),
        formErr,
        h("div", {class: "actions"}, submit,
          m.enabled === false ? h("span", {class: "muted"}, "this module is disabled") : null));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    formErr.replaceChildren();
    for (const e of errs.values()) e.textContent = "";
    labelsErr.textContent = "";
    const req = {moduleId: m.id, parameters: {}, labels: {}};
    for (const p of params) {
      const input = inputs.get(p.name);
      const v = input.type === "checkbox" ? (input.checked ? "true" : "false") : input.value;
      if (v !== "") req.parameters[p.name] = v;  // empty: the preset's or the default
    }
    for (const line of labels.value.split("\n")) {
      if (!line.trim()) continue;
      const eq = line.indexOf("=");
      if (eq <= 0) {
        labelsErr.textContent = `"${line.trim()}": key=value expected`;
        labels.focus();
        return;
      }
      req.labels[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
    if (presetSel && presetSel.value) req.preset = presetSel.value;
    submit.disabled = true;
    try {
      const run = await api("POST", "/v1/runs", req);
      location.hash = "#/runs/" + encodeURIComponent(run.runId);
    } catch (e) {
      // Each bad parameter under its field; the rest (and the message) above the button.
      const rest = [];
      for (const fv of e.fields || []) {
        const name = fv.field.replace(/^parameters\./, "");
        if (fv.field.startsWith("parameters.") && errs.has(name))
          errs.get(name).textContent = fv.description;
        else
          rest.push(fv);
      }
      formErr.replaceChildren(errorBox(e, rest));
      submit.disabled = false;
    }
  });

  const tags =
      h("div", {class: "tags"},
        m.category ? h("span", {class: "tag category", title: "category"}, m.category) : null,
        (m.tags || []).map((t) => h("span", {class: "tag"}, t)),
        m.enabled === false ? h("span", {class: "tag off"}, "disabled") : null,
        m.timeoutMs ?
            h("span", {class: "tag", title: "timeout"}, "timeout " + fmtDuration(m.timeoutMs)) :
            null);
  const card =
      h("section", {class: "card", "data-module": m.id},
        h("div", {class: "card-head"}, h("h2", null, m.name || m.id),
          h("span", {class: "id mono"}, m.id)),
        m.description ? h("p", null, m.description) : null, tags,
        h("details", {class: "start"},
          h("summary", null, params.length ? "Start with parameters…" : "Start…"), form));
  card.dataset.search =
      [m.id, m.name, m.description, m.category, ...(m.tags || [])].join(" ").toLowerCase();
  return card;
}

// ---- runs ----------------------------------------------------------------------

async function showRuns(params) {
  const v = newView("runs");
  setTitle("Runs");
  const status = params.get("status") || "";
  const moduleId = params.get("module_id") || "";
  const label = params.get("label") || "";
  const token = params.get("page_token") || "";

  const statusSel =
      h("select", {id: "filter-status"}, h("option", {value: ""}, "any status"),
        STATUSES.map(
            (s) => h(
                "option", {value: "RUN_STATUS_" + s, selected: "RUN_STATUS_" + s === status}, s)));
  const moduleSel =
      h("select", {id: "filter-module"}, h("option", {value: ""}, "any module"),
        moduleId ? h("option", {value: moduleId, selected: true}, moduleId) : null);
  const labelIn =
      h("input", {type: "text", id: "filter-label", placeholder: "key=value", value: label});
  const auto = h("input", {type: "checkbox", id: "auto-refresh", checked: autoRefresh});
  const refresh = h("button", {type: "button", class: "secondary", id: "refresh"}, "Refresh");
  const go = (extra) => {
    const q = {};
    if (statusSel.value) q.status = statusSel.value;
    if (moduleSel.value) q.module_id = moduleSel.value;
    if (labelIn.value.trim()) q.label = labelIn.value.trim();
    Object.assign(q, extra || {});
    location.hash = "#/runs" + hashQuery(q);
  };
  statusSel.addEventListener("change", () => go());
  moduleSel.addEventListener("change", () => go());
  labelIn.addEventListener("change", () => go());

  const tbody = h("tbody");
  const table =
      h("table", {class: "runs", id: "runs-table"},
        h("thead", null,
          h("tr", null,
            ["Run", "Module", "Status", "Created", "Duration", "Exit", "Labels"].map(
                (c) => h("th", {scope: "col"}, c)))),
        tbody);
  const msg = h("div", {id: "runs-message"});
  const next = h(
      "button", {type: "button", class: "secondary", id: "next-page", disabled: true}, "Next page");
  const first =
      h("button", {type: "button", class: "secondary", id: "first-page", disabled: !token},
        "First page");
  first.addEventListener("click", () => go({}));
  main.append(
      h("h1", null, "Runs"),
      h("div", {class: "toolbar"}, h("label", null, "Status", statusSel),
        h("label", null, "Module", moduleSel), h("label", null, "Label", labelIn),
        h("label", {class: "check"}, auto, "auto-refresh"), refresh),
      msg, h("div", {class: "table-wrap"}, table), h("div", {class: "pager"}, first, next));

  api("GET", "/v1/modules").then((r) => {
    if (!v.alive) return;
    for (const m of r.modules || []) {
      if (m.id !== moduleId) moduleSel.append(h("option", {value: m.id}, m.id));
    }
  }, () => {});

  const query = new URLSearchParams();
  if (status) query.append("status", status);
  if (moduleId) query.append("module_id", moduleId);
  if (label) query.append("label", label);
  query.append("page_size", String(PAGE_SIZE));
  if (token) query.append("page_token", token);

  let nextToken = "";
  next.addEventListener("click", () => {
    if (nextToken) go({page_token: nextToken});
  });
  const load = async () => {
    let page;
    try {
      page = await api("GET", "/v1/runs?" + query.toString());
    } catch (e) {
      if (v.alive) msg.replaceChildren(errorBox(e));
      return;
    }
    if (!v.alive) return;
    msg.replaceChildren();
    const runs = page.runs || [];
    tbody.replaceChildren(...runs.map(runRow));
    if (!runs.length) msg.replaceChildren(h("p", {class: "muted"}, "No runs."));
    nextToken = page.nextPageToken || "";
    next.disabled = !nextToken;
  };
  refresh.addEventListener("click", load);
  let timer = null;
  const setAuto = () => {
    autoRefresh = auto.checked;
    if (timer) clearInterval(timer);
    timer = autoRefresh ? setInterval(load, 5000) : null;
  };
  auto.addEventListener("change", setAuto);
  v.cleanups.push(() => timer && clearInterval(timer));
  setAuto();
  await load();
}

// A run's labels as key=value chips; null for none.
function labelsList(labels) {
  const kv = Object.entries(labels || {});
  return kv.length ?
      h("span", {class: "kv"}, kv.map(([k, val]) => h("code", null, k + "=" + val))) :
      null;
}

function runRow(r) {
  const st = shortStatus(r.status);
  const exit = !TERMINAL.has(st) ? "" :
      r.termSignal               ? SIGNALS[r.termSignal] || "signal " + r.termSignal :
                                   String(r.exitCode);
  return h(
      "tr", {"data-run-id": r.runId},
      h("td", {"data-label": "Run"},
        h("a", {href: "#/runs/" + encodeURIComponent(r.runId), class: "mono"}, r.runId)),
      h("td", {"data-label": "Module"}, r.moduleId),
      h("td", {"data-label": "Status"}, statusBadge(r.status)),
      h("td", {"data-label": "Created"}, fmtTime(r.createdAtMs)),
      h("td", {"data-label": "Duration"}, runDuration(r)), h("td", {"data-label": "Exit"}, exit),
      h("td", {"data-label": "Labels", class: "labels"}, labelsList(r.labels)));
}

// ---- one run -------------------------------------------------------------------

async function showRun(id) {
  const v = newView("runs");
  setTitle("Run " + id);
  const path = "/v1/runs/" + encodeURIComponent(id);
  const statusEl =
      h("span", {id: "run-status-wrap"}, h("span", {class: "status", id: "run-status"}, "…"));
  const cancel =
      h("button", {type: "button", class: "danger", id: "cancel", disabled: true}, "Cancel");
  const msg = h("div", {id: "run-message"});
  const details = h("dl", {class: "details", id: "run-details"});
  const progress = h("div", {class: "progress hidden", id: "run-progress"});
  const out = new OutputView(id);
  main.append(
      h("div", {class: "run-head"}, h("h1", {class: "mono"}, id), statusEl,
        h("div", {class: "actions"}, cancel)),
      msg, progress, details, out.root);

  let run = null;
  let timer = null;
  const show = (r) => {
    // A poll answered before the end event may come after it: a terminal run stays.
    if (run && TERMINAL.has(shortStatus(run.status)) && !TERMINAL.has(shortStatus(r.status)))
      return;
    run = r;
    const st = shortStatus(r.status);
    statusEl.replaceChildren(statusBadge(r.status, "run-status"));
    cancel.disabled = TERMINAL.has(st);
    renderDetails(details, r);
    if (r.progress) renderProgress(progress, r.progress);
    if (TERMINAL.has(st) && timer) {
      clearTimeout(timer);
      timer = null;
    }
  };
  // The stream tells the end and progress; the rest (QUEUED to RUNNING, the pid, the
  // byte counts) is polled while the run lasts.
  const poll = async () => {
    timer = null;
    try {
      const r = await api("GET", path);
      if (!v.alive) return;
      show(r);
    } catch (e) {
      if (!v.alive) return;
      msg.replaceChildren(errorBox(e));
    }
    if (v.alive && run && !TERMINAL.has(shortStatus(run.status))) timer = setTimeout(poll, POLL_MS);
  };
  v.cleanups.push(() => timer && clearTimeout(timer));

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const r = await api("POST", path + ":cancel");
      if (v.alive) show(r);
    } catch (e) {
      if (!v.alive) return;
      msg.replaceChildren(errorBox(e));
      cancel.disabled = run ? TERMINAL.has(shortStatus(run.status)) : false;
    }
  });

  try {
    show(await api("GET", path));
  } catch (e) {
    if (v.alive) {
      msg.replaceChildren(errorBox(e));
      out.root.classList.add("hidden");
    }
    return;
  }
  if (!v.alive) return;
  if (!TERMINAL.has(shortStatus(run.status))) timer = setTimeout(poll, POLL_MS);
  out.follow(
      path + "/output?follow=true",
      (r) => {
        if (v.alive) show(r);
      },
      (p) => {
        if (v.alive) renderProgress(progress, p);
      });
  v.cleanups.push(() => out.close());
}

function detail(label, value, wide) {
  return h("div", {class: wide ? "wide" : null}, h("dt", null, label), h("dd", null, value));
}

function renderDetails(dl, r) {
  const st = shortStatus(r.status);
  let exit = "—";
  if (r.termSignal)
    exit = "signal " + r.termSignal +
        (SIGNALS[r.termSignal] ? " (" + SIGNALS[r.termSignal] + ")" : "");
  else if (TERMINAL.has(st) && num(r.startedAtMs) > 0)
    exit = String(r.exitCode);
  const moduleLink = h("a", {href: "#/runs" + hashQuery({module_id: r.moduleId})}, r.moduleId);
  const items = [
    detail("Module", moduleLink),
    detail("Exit", h("span", {id: "run-exit"}, exit)),
    detail("Created", fmtTime(r.createdAtMs)),
    detail("Started", fmtTime(r.startedAtMs)),
    detail("Finished", fmtTime(r.finishedAtMs)),
    detail("Duration", runDuration(r)),
    detail("Timeout", r.timeoutMs ? fmtDuration(r.timeoutMs) : "none"),
    detail("Owner", r.owner || "(anonymous)"),
    detail("Preset", r.preset || "—"),
    r.executor === "slurm" ?
        detail("Slurm job", (r.jobId || "not submitted yet") + (r.node ? " on " + r.node : "") +
                                (r.pendingReason ? " (pending: " + r.pendingReason + ")" : "")) :
        detail("PID", r.pid ? String(r.pid) : "—"),
    detail("Output", `stdout ${fmtBytes(r.stdoutBytes)}, stderr ${fmtBytes(r.stderrBytes)}`),
    detail("CPU", `user ${fmtDuration(num(r.userCpuMs))}, system ${fmtDuration(num(r.sysCpuMs))}`),
    detail("Max RSS", num(r.maxRssKb) ? fmtBytes(num(r.maxRssKb) * 1024) : "—"),
    r.requestId ? detail("Request id", h("span", {class: "mono"}, r.requestId)) : null,
    num(r.outputDroppedBytes) ? detail("Output dropped", fmtBytes(r.outputDroppedBytes)) : null,
    detail(
        "Parameters",
        h("span", {class: "kv", id: "run-parameters"},
          Object.entries(r.parameters || {}).map(([k, val]) => h("code", null, k + "=" + val))),
        true),
    Object.keys(r.labels || {}).length ? detail("Labels", labelsList(r.labels), true) : null,
    r.errorMessage ?
        detail("Error", h("span", {class: "run-error", id: "run-error"}, r.errorMessage), true) :
        null,
  ];
  dl.replaceChildren(...items.filter(Boolean));
}

function renderProgress(box, p) {
  const done = num(p.done), total = num(p.total);
  const bar = h("progress", {
    max: total > 0 ? String(total) : null,
    value: total > 0 ? String(Math.min(done, total)) : null
  });
  const text =
      total > 0 ? `${Math.round((100 * done) / total)} % (${done} of ${total})` : `${done} done`;
  box.replaceChildren(bar, h("span", null, text + (p.message ? " · " + p.message : "")));
  box.classList.remove("hidden");
}

// ---- live output ---------------------------------------------------------------

const SGR_FG = (n) => "fg" + n;
const SGR_BG = (n) => "bg" + n;
// A complete escape sequence at the start: CSI (its parameters and its final byte as
// groups 1 and 2), an OSC string (ended by BEL or ST), a DCS, SOS, PM or APC string
// (ended by ST), or a two-byte escape (whose final byte is any but those that open the
// others).
const ESC_FULL = new RegExp("^\\x1b(?:" + [
  String.raw`\[([0-?]*)[ -/]*([@-~])`,
  String.raw`\][^\x07\x1b]*(?:\x07|\x1b\\)`,
  String.raw`[PX^_][^\x1b]*\x1b\\`,
  String.raw`[ -/]*[0-OQ-WYZ\\\x60-~]`,
].join("|") + ")");
// The start of one that has not ended yet (the rest comes with the next chunk).
const ESC_PART = /^\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)$/;
const ESC_PENDING_MAX = 4096;
// Control characters other than \t, \n, \r and ESC are dropped, C1 ones too.
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]/g;

// What one stream (stdout or stderr) has open between chunks: a UTF-8 decoder, an
// escape sequence cut by a chunk's end, the SGR attributes, a carriage return.
class StreamState {
  constructor() {
    this.decoder = new TextDecoder("utf-8");
    this.pending = "";
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.dim = false;
    this.italic = false;
    this.underline = false;
    this.cr = false;
  }

  classes() {
    const c = [];
    if (this.fg !== null) c.push(SGR_FG(this.fg));
    if (this.bg !== null) c.push(SGR_BG(this.bg));
    if (this.bold) c.push("b");
    if (this.dim) c.push("dim");
    if (this.italic) c.push("i");
    if (this.underline) c.push("u");
    return c.join(" ");
  }

  reset() {
    this.fg = this.bg = null;
    this.bold = this.dim = this.italic = this.underline = false;
  }

  // Select Graphic Rendition: the parameters of one ESC [ ... m.
  sgr(params) {
    const ps =
        params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : parseInt(x, 10)));
    for (let i = 0; i < ps.length; i++) {
      const p = ps[i];
      if (p === 0)
        this.reset();
      else if (p === 1)
        this.bold = true;
      else if (p === 2)
        this.dim = true;
      else if (p === 3)
        this.italic = true;
      else if (p === 4)
        this.underline = true;
      else if (p === 22)
        this.bold = this.dim = false;
      else if (p === 23)
        this.italic = false;
      else if (p === 24)
        this.underline = false;
      else if (p >= 30 && p <= 37)
        this.fg = p - 30;
      else if (p >= 90 && p <= 97)
        this.fg = p - 90 + 8;
      else if (p === 39)
        this.fg = null;
      else if (p >= 40 && p <= 47)
        this.bg = p - 40;
      else if (p >= 100 && p <= 107)
        this.bg = p - 100 + 8;
      else if (p === 49)
        this.bg = null;
      else if (p === 38 || p === 48) {
        // 256 colours (5;N: the first 16 are the palette's) or RGB (2;R;G;B): the
        // others are not rendered, their parameters skipped.
        if (ps[i + 1] === 5) {
          const n = ps[i + 2];
          if (n >= 0 && n < 16) {
            if (p === 38)
              this.fg = n;
            else
              this.bg = n;
          }
          i += 2;
        } else if (ps[i + 1] === 2) {
          i += 4;
        }
      }
    }
  }
}

// The live output of a run: lines of stdout and stderr (class "stdout"/"stderr"),
// ANSI colours as spans, the last MAX_LINES lines kept, kept scrolled to the end
// unless the reader has scrolled up.
class OutputView {
  constructor(runId) {
    this.runId = runId;
    this.es = null;
    this.ended = false;
    this.streams = {1: new StreamState(), 2: new StreamState()};
    this.lines = [];   // {stream, segs: [[classes, text]], chars, el, gone}
    this.open = null;  // the last line, while no newline has ended it
    this.dirty = [];   // lines to (re)draw at the next frame
    this.chars = 0;
    this.dropped = 0;
    this.scheduled = false;
    this.stick = true;

    this.pre = h(
        "pre",
        {class: "output", id: "output", tabindex: "0", "aria-label": "output", "aria-live": "off"});
    this.notice = h("div", {class: "notice hidden", id: "output-dropped"});
    this.pre.append(this.notice);
    this.state = h("span", {class: "state", id: "output-state"}, "connecting…");
    this.jump =
        h("button", {type: "button", class: "jump hidden", id: "output-jump"}, "↓ Follow output");
    const colours = h("input", {type: "checkbox", id: "output-colours", checked: true});
    const wrap = h("input", {type: "checkbox", id: "output-wrap", checked: true});
    colours.addEventListener("change", () => this.pre.classList.toggle("plain", !colours.checked));
    wrap.addEventListener("change", () => this.pre.classList.toggle("nowrap", !wrap.checked));
    this.root =
        h("section", {class: "output-section"},
          h("div", {class: "output-bar"}, h("strong", null, "Output"),
            h("span", {class: "legend stdout"}, "stdout"),
            h("span", {class: "legend stderr"}, "stderr"), h("label", null, colours, "colours"),
            h("label", null, wrap, "wrap lines"), this.state),
          h("div", {class: "output-box"}, this.pre, this.jump));
    this.pre.addEventListener("scroll", () => {
      this.stick = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 24;
      this.jump.classList.toggle("hidden", this.stick);
    });
    this.jump.addEventListener("click", () => {
      this.stick = true;
      this.pre.scrollTop = this.pre.scrollHeight;
    });
  }

  // Follows `url` (Server-Sent Events of docs/http.md) until its end event, which
  // gives the terminal run to onRun; progress events go to onProgress.
  follow(url, onRun, onProgress) {
    const es = new EventSource(url);
    this.es = es;
    es.addEventListener("open", () => this.setState("live"));
    es.addEventListener("output", (ev) => {
      let c;
      try {
        c = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      this.feed(c.stream === "OUTPUT_STREAM_STDERR" ? 2 : 1, b64bytes(c.data));
    });
    es.addEventListener("progress", (ev) => {
      try {
        const c = JSON.parse(ev.data);
        if (c.progress) onProgress(c.progress);
      } catch (e) {
        // not ours to fail on
      }
    });
    es.addEventListener("end", (ev) => {
      this.close();
      this.ended = true;
      this.finish();
      this.setState("ended");
      try {
        const c = JSON.parse(ev.data);
        if (c.run) onRun(c.run);
      } catch (e) {
        // the poll shows the run
      }
    });
    // An `error` event with data is the server's: the stream was cut short (say, a
    // shutdown). Without data it is the connection's: EventSource retries by itself
    // (from Last-Event-ID) unless the answer was an error, which closes it.
    es.addEventListener("error", (ev) => {
      if (ev.data) {
        let why = "the stream ended early";
        try {
          why = JSON.parse(ev.data).message || why;
        } catch (e) {
          // keep the generic reason
        }
        this.close();
        this.setState("stopped: " + why);
      } else if (es.readyState === EventSource.CLOSED) {
        this.es = null;
        this.setState("cannot follow the output");
      } else {
        this.setState("reconnecting…");
      }
    });
  }

  close() {
    if (this.es) this.es.close();
    this.es = null;
  }

  setState(s) {
    this.state.textContent = s;
  }

  // Bytes of stream `sn` (1 stdout, 2 stderr): decoded, escape sequences read, split
  // into lines.
  feed(sn, bytes) {
    const st = this.streams[sn];
    let text = st.pending + st.decoder.decode(bytes, {stream: true});
    st.pending = "";
    let i = 0;
    while (i < text.length) {
      const esc = text.indexOf("\x1b", i);
      const stop = esc < 0 ? text.length : esc;
      if (stop > i) this.text(sn, st, text.slice(i, stop));
      if (esc < 0) break;
      const rest = text.slice(esc);
      const m = ESC_FULL.exec(rest);
      if (m) {
        if (m[2] === "m") st.sgr(m[1]);
        i = esc + m[0].length;
      } else if (rest.length < ESC_PENDING_MAX && ESC_PART.test(rest)) {
        st.pending = rest;
        break;
      } else {
        i = esc + 1;  // a lone ESC: dropped
      }
    }
    this.schedule();
  }

  // Plain text (no ESC) of a stream: newlines end lines, a carriage return starts
  // the line over (progress bars), other control characters are dropped.
  text(sn, st, s) {
    const parts = s.split("\n");
    parts.forEach((part, k) => {
      if (k > 0) {
        st.cr = false;
        this.newline(sn);
      }
      const segs = part.split("\r");
      segs.forEach((seg, j) => {
        if (j > 0) st.cr = true;
        const clean = seg.replace(CONTROL, "");
        if (!clean) return;
        if (st.cr) {
          st.cr = false;
          if (this.open && this.open.stream === sn) this.clearLine(this.open);
        }
        this.add(sn, clean, st.classes());
      });
    });
  }

  newLine(sn) {
    const line = {stream: sn, segs: [], chars: 0, el: null, gone: false, queued: false};
    this.lines.push(line);
    this.touch(line);
    return line;
  }

  newline(sn) {
    if (this.open && this.open.stream === sn)
      this.open = null;
    else
      this.newLine(sn);  // an empty line
    this.open = null;
    this.trim();
  }

  add(sn, s, cls) {
    while (s.length) {
      let line = this.open && this.open.stream === sn ? this.open : null;
      if (!line || line.chars >= MAX_LINE_CHARS) line = this.open = this.newLine(sn);
      const take = s.slice(0, MAX_LINE_CHARS - line.chars);
      s = s.slice(take.length);
      const last = line.segs[line.segs.length - 1];
      if (last && last[0] === cls)
        last[1] += take;
      else
        line.segs.push([cls, take]);
      line.chars += take.length;
      this.chars += take.length;
      this.touch(line);
    }
    this.trim();
  }

  clearLine(line) {
    this.chars -= line.chars;
    line.segs = [];
    line.chars = 0;
    this.touch(line);
  }

  touch(line) {
    if (line.queued) return;
    line.queued = true;
    this.dirty.push(line);
    // No frame is drawn while the page is hidden: the dropped lines go from the list
    // now and then, so that it stays bounded as the lines are.
    if (this.dirty.length > 2 * MAX_LINES) this.dirty = this.dirty.filter((l) => !l.gone);
  }

  // Drops the oldest lines beyond the bounds.
  trim() {
    let n = 0;
    while (this.lines.length - n > MAX_LINES ||
           (this.chars > MAX_CHARS && this.lines.length - n > 1)) {
      const line = this.lines[n++];
      line.gone = true;
      this.chars -= line.chars;
      if (line.el) line.el.remove();
      if (line === this.open) this.open = null;
    }
    if (n) {
      this.lines.splice(0, n);
      this.dropped += n;
    }
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.draw());
  }

  finish() {
    for (const st of Object.values(this.streams)) st.decoder.decode();  // a cut UTF-8 sequence ends
    this.draw();
  }

  // Draws the lines changed since the last frame.
  draw() {
    this.scheduled = false;
    const frag = document.createDocumentFragment();
    for (const line of this.dirty) {
      line.queued = false;
      if (line.gone) continue;
      const fresh = !line.el;
      if (fresh) line.el = h("div", {class: "line " + (line.stream === 2 ? "stderr" : "stdout")});
      line.el.replaceChildren(...line.segs.map(
          ([cls, t]) => (cls ? h("span", {class: cls}, t) : document.createTextNode(t))));
      if (fresh) frag.appendChild(line.el);
    }
    this.dirty = [];
    this.pre.appendChild(frag);
    if (this.dropped) {
      this.notice.textContent =
          `${this.dropped} earlier line${this.dropped === 1 ? "" : "s"} not shown ` +
          `(the page keeps the last ${MAX_LINES})`;
      this.notice.classList.remove("hidden");
    }
    if (this.stick) this.pre.scrollTop = this.pre.scrollHeight;
  }
}

window.addEventListener("hashchange", route);
route();
