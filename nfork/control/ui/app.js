// nfork dashboard: reads the control API every second and draws it.
// Plain browser JavaScript, no build step, no library, nothing fetched from
// elsewhere: every request goes to this page's own origin (the REST API).
"use strict";

(() => {
  const TOKEN_KEY = "nfork.token";
  const REFRESH_MS = 1000;
  const HISTORY_SECONDS = 300; // the chart's span: the last five minutes
  const TOP_ENDPOINTS = 20;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    paused: false,
    timer: null,
    inbounds: new Map(), // inbound name -> its view
    history: new Map(), // "inbound\0outbound" -> [{t, rate, fail, p99}]
    selection: new Map(), // inbound name -> {candidate, endpoint, field, sample, error}
    lastOk: null,
    pointerDown: false,
  };

  const $ = (selector) => document.querySelector(selector);

  /** An element with attributes (class, text, data-*, others) and children. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  /** Rebuild part of the page without losing the keyboard focus. */
  function keepingFocus(rebuild) {
    const active = document.activeElement;
    const key = active && active.dataset ? active.dataset.key : undefined;
    rebuild();
    if (key && !document.contains(active)) {
      const again = document.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  // ---- The REST API ------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const enc = encodeURIComponent;

  /** Call the API; resolve with its JSON, or reject with its own message. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, `cannot reach nfork (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  // ---- Figures -----------------------------------------------------------

  const UNITS = { ns: 1e-9, us: 1e-6, "µs": 1e-6, "μs": 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

  /** Seconds in a Go duration ("1.504ms", "1m30s", "0s"). */
  function seconds(duration) {
    if (typeof duration !== "string") return 0;
    let total = 0;
    for (const match of duration.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)/g)) {
      total += parseFloat(match[1]) * UNITS[match[2]];
    }
    return total;
  }

  const integer = new Intl.NumberFormat("en-US");
  function rate(value) {
    if (value === 0) return "0";
    return value < 10 ? value.toFixed(1) : integer.format(Math.round(value));
  }
  function sum(object) {
    return Object.values(object || {}).reduce((a, b) => a + b, 0);
  }
  function describeMs(value) {
    if (value <= 0) return "0";
    if (value < 0.001) return `${Math.round(value * 1e6)}µs`;
    if (value < 1) return `${+(value * 1000).toPrecision(3)}ms`;
    return `${+value.toPrecision(3)}s`;
  }

  // ---- Status line and errors ----------------------------------------------

  function setStatus(text, stale = false) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  function showError(message) {
    $("#error-text").textContent = message;
    $("#error").hidden = false;
  }

  // ---- Token ---------------------------------------------------------------

  function askToken(rejected) {
    const dialog = $("#token-dialog");
    const error = $("#token-error");
    error.hidden = !rejected;
    error.textContent = rejected ? "The API refused this token." : "";
    setStatus("the control API needs a token", true);
    if (!dialog.open) dialog.showModal();
    $("#token-input").focus();
  }

  function setupToken() {
    const dialog = $("#token-dialog");
    // Without a token the page cannot work: Escape does not close it.
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#token-input").value.trim();
      if (!token) return;
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("#token-input").value = "";
      dialog.close();
      refresh();
    });
    $("#forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      refresh();
    });
  }

  // ---- Confirmation dialog -------------------------------------------------

  /**
   * Ask before an action: title, text, optional input fields; on Confirm,
   * run(values) calls the API.  An API error stays in the dialog, with the
   * API's own message.
   */
  function confirmAction({ title, text, fields = [], ok = "Confirm", danger = false, run }) {
    const dialog = $("#confirm-dialog");
    const form = $("#confirm-form");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    const error = $("#confirm-error");
    error.hidden = true;
    const okButton = $("#confirm-ok");
    okButton.textContent = ok;
    okButton.className = danger ? "primary danger" : "primary";
    okButton.disabled = false;
    const holder = $("#confirm-fields");
    holder.replaceChildren();
    const inputs = {};
    for (const field of fields) {
      const input = el("input", {
        id: `field-${field.id}`,
        name: field.id,
        type: field.type || "text",
        required: true,
        value: field.value ?? "",
        placeholder: field.placeholder,
        step: field.step,
        min: field.min,
        max: field.max,
        autocomplete: "off",
      });
      inputs[field.id] = input;
      holder.append(el("label", { for: input.id, text: field.label }), input);
    }
    const previous = document.activeElement;
    form.onsubmit = async (event) => {
      event.preventDefault();
      const values = {};
      for (const [id, input] of Object.entries(inputs)) values[id] = input.value.trim();
      okButton.disabled = true;
      try {
        await run(values);
        dialog.close();
        refresh();
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
      } finally {
        okButton.disabled = false;
      }
    };
    dialog.onclose = () => {
      if (previous && document.contains(previous)) previous.focus();
    };
    dialog.showModal();
    (fields.length ? inputs[fields[0].id] : $("#confirm-cancel")).focus();
  }

  function setupConfirm() {
    $("#confirm-cancel").addEventListener("click", () => $("#confirm-dialog").close());
  }

  // ---- Actions -------------------------------------------------------------

  function activate(inbound, outbound) {
    confirmAction({
      title: "Switch the active outbound",
      text: `Make "${outbound}" the active outbound of inbound "${inbound}"? Clients will get its answers; the current active outbound becomes a shadow.`,
      ok: `Activate ${outbound}`,
      run: () => api("POST", `/v1/nfork/${enc(inbound)}/${enc(outbound)}/activate`),
    });
  }

  function removeOutbound(inbound, outbound) {
    confirmAction({
      title: "Remove an outbound",
      text: `Remove outbound "${outbound}" from inbound "${inbound}"? It stops getting copies and its stats are lost.`,
      ok: `Remove ${outbound}`,
      danger: true,
      run: () => api("DELETE", `/v1/nfork/${enc(inbound)}/${enc(outbound)}`),
    });
  }

  function changeSample(inbound, outbound, current) {
    const config = typeof current === "string" ? { addr: current } : { ...current };
    confirmAction({
      title: "Change the sample rate",
      text: `The fraction of requests copied to "${outbound}" (more than 0, at most 1). Its other settings are kept.`,
      fields: [
        { id: "sample", label: "Sample rate", type: "number", value: config.sample ?? 1, step: "any", min: "0", max: "1" },
      ],
      ok: "Set sample rate",
      run: (values) => {
        const sample = Number(values.sample);
        if (!Number.isFinite(sample)) throw new Error("the sample rate must be a number");
        return api("PUT", `/v1/nfork/${enc(inbound)}/${enc(outbound)}`, { ...config, sample });
      },
    });
  }

  function addOutbound(inbound) {
    confirmAction({
      title: "Add an outbound",
      text: `A new shadow for inbound "${inbound}": it gets a copy of every request.`,
      fields: [
        { id: "name", label: "Name", placeholder: "staging" },
        { id: "addr", label: "Address", placeholder: "localhost:8081" },
      ],
      ok: "Add outbound",
      run: (values) => {
        if (!values.name) throw new Error("the outbound needs a name");
        return api("PUT", `/v1/nfork/${enc(inbound)}/${enc(values.name)}`, values.addr);
      },
    });
  }

  function resetCompare(inbound) {
    confirmAction({
      title: "Reset the comparison",
      text: `Reset the comparison counters and samples of inbound "${inbound}"?`,
      ok: "Reset",
      danger: true,
      run: () => api("DELETE", `/v1/nfork/${enc(inbound)}/compare`),
    });
  }

  // ---- Inbounds and outbounds ----------------------------------------------

  function buildInbound(name) {
    const view = { name, outbounds: new Map(), compareKey: null };
    view.title = el("h2", { text: name });
    view.listen = el("span", { class: "listen mono" });
    view.addButton = el("button", { type: "button", "data-key": `add\0${name}`, text: "Add outbound", onclick: () => addOutbound(name) });
    view.grid = el("div", { class: "outbounds" });
    view.compare = el("section", { class: "compare", hidden: true, "aria-label": `Comparison of ${name}` });
    view.el = el(
      "section",
      { class: "inbound", "data-inbound": name, "aria-label": `Inbound ${name}` },
      el("div", { class: "inbound-head" }, view.title, view.listen, el("span", { class: "spacer" }), view.addButton),
      view.grid,
      view.compare,
    );
    return view;
  }

  const FIGURES = [
    ["rate", "req/s"],
    ["p50", "p50 latency"],
    ["p99", "p99 latency"],
    ["requests", "requests"],
    ["ttfb50", "p50 TTFB"],
    ["ttfb99", "p99 TTFB"],
    ["errors", "errors"],
    ["timeouts", "timeouts"],
    ["dropped", "dropped"],
    ["skipped", "skipped"],
  ];

  function buildOutbound(inbound, name) {
    const view = { name, configKey: null, figures: {} };
    view.badge = el("span", { class: "badge" });
    view.addr = el("span", { class: "addr mono" });
    const figures = el("dl", { class: "figures" });
    for (const [key, label] of FIGURES) {
      const value = el("dd", { "data-figure": key, text: "–" });
      view.figures[key] = value;
      figures.append(el("div", {}, el("dt", { text: label }), value));
    }
    view.mix = el("div", { class: "mix", role: "img", "aria-label": "status codes" });
    view.mixText = el("p", { class: "mix-text" });
    view.chart = svg("svg", { class: "chart", viewBox: "0 0 300 64", preserveAspectRatio: "none", role: "img", "aria-label": "the last minutes" });
    view.legend = el("p", { class: "legend" });
    view.actions = el("div", { class: "actions" });
    view.el = el(
      "article",
      { class: "outbound", "data-outbound": name, "aria-label": `Outbound ${name}` },
      el("div", { class: "outbound-head" }, el("h3", { text: name }), view.badge, view.addr),
      figures,
      view.mix,
      view.mixText,
      view.chart,
      view.legend,
      view.actions,
    );
    return view;
  }

  function address(config) {
    return typeof config === "string" ? config : config && config.addr;
  }

  function updateOutboundConfig(inbound, view, config, active) {
    const key = JSON.stringify([config, active]);
    if (key === view.configKey) return;
    view.configKey = key;
    const isActive = view.name === active;
    view.el.classList.toggle("is-active", isActive);
    view.badge.className = isActive ? "badge active" : "badge";
    const sample = typeof config === "object" && config && config.sample !== undefined ? ` · sample ${config.sample}` : "";
    view.badge.textContent = isActive ? "active" : "shadow";
    view.addr.textContent = `${address(config)}${sample}`;
    const name = view.name;
    keepingFocus(() => {
      view.actions.replaceChildren();
      if (isActive) {
        view.actions.append(el("span", { class: "muted", text: "answers the clients" }));
        return;
      }
      view.actions.append(
        el("button", { type: "button", class: "primary", "data-key": `activate\0${inbound}\0${name}`, "data-action": "activate", text: "Activate", onclick: () => activate(inbound, name) }),
        el("button", { type: "button", "data-key": `sample\0${inbound}\0${name}`, "data-action": "sample", text: "Sample rate…", onclick: () => changeSample(inbound, name, config) }),
        el("button", { type: "button", class: "danger", "data-key": `remove\0${inbound}\0${name}`, "data-action": "remove", text: "Remove", onclick: () => removeOutbound(inbound, name) }),
      );
    });
  }

  function updateFigures(view, stats, windowSeconds) {
    const total = stats.total || {};
    const f = view.figures;
    f.rate.textContent = rate((stats.requests || 0) / windowSeconds);
    f.p50.textContent = stats.requests ? stats.latency.p50 : "–";
    f.p99.textContent = stats.requests ? stats.latency.p99 : "–";
    f.ttfb50.textContent = sum(stats.responses) ? stats.ttfb.p50 : "–";
    f.ttfb99.textContent = sum(stats.responses) ? stats.ttfb.p99 : "–";
    f.requests.textContent = integer.format(total.requests || 0);
    for (const key of ["errors", "timeouts", "dropped"]) {
      f[key].textContent = integer.format(total[key] || 0);
      f[key].classList.toggle("bad", (stats[key] || 0) > 0);
      f[key].title = `${stats[key] || 0} in the last window`;
    }
    const skipped = total.skipped || {};
    f.skipped.textContent = integer.format(sum(skipped));
    f.skipped.title = Object.entries(skipped).map(([reason, n]) => `${reason}: ${n}`).join(", ") || "none";

    const responses = total.responses || {};
    const count = sum(responses);
    const classes = {};
    for (const [code, n] of Object.entries(responses)) {
      const family = code.length === 3 ? code[0] : "0";
      classes[family] = (classes[family] || 0) + n;
    }
    view.mix.replaceChildren(
      ...Object.keys(classes).sort().map((family) => {
        const span = el("span", { class: `c${family}`, title: `${family}xx: ${classes[family]}` });
        span.style.width = `${(100 * classes[family]) / count}%`;
        return span;
      }),
    );
    const codes = Object.keys(responses).sort();
    view.mixText.textContent = count
      ? codes.map((code) => `${code}: ${integer.format(responses[code])} (${((100 * responses[code]) / count).toFixed(1)}%)`).join(" · ")
      : "no responses yet";
  }

  function record(key, stats, windowSeconds, now) {
    let points = state.history.get(key);
    if (!points) {
      points = [];
      state.history.set(key, points);
    }
    points.push({
      t: now,
      rate: (stats.requests || 0) / windowSeconds,
      fail: ((stats.errors || 0) + (stats.timeouts || 0) + (stats.dropped || 0)) / windowSeconds,
      p99: stats.requests ? seconds(stats.latency.p99) : 0,
    });
    while (points.length && points[0].t < now - HISTORY_SECONDS * 1000) points.shift();
    return points;
  }

  /** The chart's span in ms: a minute at first, growing to HISTORY_SECONDS. */
  function span(points, now) {
    return Math.min(HISTORY_SECONDS * 1000, Math.max(60000, now - points[0].t));
  }

  function polyline(points, now, value, top, cls) {
    const width = span(points, now);
    const coords = points.map((p) => {
      const x = 300 - ((now - p.t) / width) * 300;
      const y = 62 - (top > 0 ? (value(p) / top) * 58 : 0);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    return svg("polyline", { class: cls, points: coords.join(" "), "vector-effect": "non-scaling-stroke" });
  }

  function drawChart(view, points, now) {
    const topRate = Math.max(1, ...points.map((p) => Math.max(p.rate, p.fail)));
    const topP99 = Math.max(0, ...points.map((p) => p.p99));
    const grid = [16, 32, 48].map((y) => svg("line", { class: "grid", x1: 0, x2: 300, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }));
    view.chart.replaceChildren(
      ...grid,
      polyline(points, now, (p) => p.p99, topP99, "p99"),
      polyline(points, now, (p) => p.rate, topRate, "rate"),
      polyline(points, now, (p) => p.fail, topRate, "fail"),
    );
    const minutes = Math.round(span(points, now) / 60000);
    view.legend.replaceChildren(
      el("span", { class: "k-rate", text: `req/s (max ${rate(topRate)})` }),
      el("span", { class: "k-fail", text: "failed/s" }),
      el("span", { class: "k-p99", text: `p99 (max ${describeMs(topP99)})` }),
      el("span", { text: `last ${minutes} min` }),
    );
  }

  function updateInbound(view, config, stats, report, bound, now) {
    const name = view.name;
    view.listen.textContent = bound && bound !== config.listen ? `listen ${config.listen} (${bound})` : `listen ${config.listen}`;
    const windowSeconds = seconds(config.statsWindow || "1s") || 1;
    const out = config.out || {};
    const names = Object.keys(out);
    for (const [outName, outView] of view.outbounds) {
      if (!(outName in out)) {
        outView.el.remove();
        view.outbounds.delete(outName);
        state.history.delete(`${name}\0${outName}`);
      }
    }
    names.forEach((outName, index) => {
      let outView = view.outbounds.get(outName);
      if (!outView) {
        outView = buildOutbound(name, outName);
        view.outbounds.set(outName, outView);
      }
      if (view.grid.children[index] !== outView.el) view.grid.insertBefore(outView.el, view.grid.children[index] || null);
      updateOutboundConfig(name, outView, out[outName], config.active);
      const outStats = stats[outName] || {};
      updateFigures(outView, outStats, windowSeconds);
      drawChart(outView, record(`${name}\0${outName}`, outStats, windowSeconds, now), now);
    });
    updateCompare(view, report);
  }

  // ---- Comparison ----------------------------------------------------------

  function differenceRate(endpoint) {
    return endpoint.requests ? endpoint.differing / endpoint.requests : 0;
  }

  function percent(part, whole) {
    return whole ? `${((100 * part) / whole).toFixed(1)}%` : "–";
  }

  function show(value) {
    if (value === undefined) return "(absent)";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function selectEndpoint(inbound, candidate, endpoint) {
    state.selection.set(inbound, { candidate, endpoint });
    refreshCompare(inbound);
  }

  async function loadSample(inbound, candidate, endpoint, field) {
    const selection = { candidate, endpoint, field, loading: true };
    state.selection.set(inbound, selection);
    refreshCompare(inbound);
    try {
      const query = `endpoint=${enc(endpoint)}&field=${enc(field)}`;
      const samples = await api("GET", `/v1/nfork/${enc(inbound)}/compare/${enc(candidate)}/samples?${query}`);
      selection.sample = samples[0] || null;
    } catch (e) {
      selection.error = e.message;
    }
    selection.loading = false;
    refreshCompare(inbound);
  }

  function refreshCompare(inbound) {
    const view = state.inbounds.get(inbound);
    if (view) {
      view.compareKey = null;
      updateCompare(view, view.report);
    }
  }

  function sampleView(selection) {
    if (selection.loading) return el("p", { class: "muted", text: "loading the sample…" });
    if (selection.error) return el("p", { class: "form-error", text: selection.error });
    const sample = selection.sample;
    if (!sample) return el("p", { class: "muted", text: "no sample kept for this field" });
    const rows = (sample.differences || []).map((d) =>
      el("tr", {}, el("td", { class: "mono", text: d.field }), el("td", { text: d.kind }), el("td", { class: "mono", text: show(d.primary) }), el("td", { class: "mono", text: show(d.candidate) })),
    );
    const answer = (who, a) =>
      el("div", {}, el("h4", { text: `${who}: ${a ? a.error || a.status : "none"}` }), el("pre", { class: "mono", text: a ? (a.body ?? (a.bodyBase64 ? `(base64) ${a.bodyBase64}` : "")) : "" }));
    return el(
      "div",
      { class: "sample" },
      el("h4", { text: `Sample: ${sample.request.method} ${sample.request.target}` }),
      el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "field" }), el("th", { text: "kind" }), el("th", { text: "primary" }), el("th", { text: "candidate" }))), el("tbody", {}, ...rows))),
      el("div", { class: "side-by-side" }, answer("primary", sample.answers.primary), answer("candidate", sample.answers.candidate)),
    );
  }

  function candidateView(inbound, candidate, figures, selection) {
    const endpoints = Object.entries(figures.endpoints || {}).sort(
      ([a, x], [b, y]) => differenceRate(y) - differenceRate(x) || y.differing - x.differing || a.localeCompare(b),
    );
    const rows = endpoints.slice(0, TOP_ENDPOINTS).map(([endpoint, e]) => {
      const selected = selection && selection.candidate === candidate && selection.endpoint === endpoint;
      return el(
        "tr",
        { class: selected ? "selected" : undefined },
        el("td", {}, el("button", { type: "button", class: "link mono", "aria-pressed": selected ? "true" : "false", "data-key": `endpoint\0${inbound}\0${candidate}\0${endpoint}`, text: endpoint, onclick: () => selectEndpoint(inbound, candidate, endpoint) })),
        el("td", { class: "num", text: integer.format(e.requests) }),
        el("td", { class: "num", text: integer.format(e.differing) }),
        el("td", { class: "num", text: percent(e.differing, e.requests) }),
      );
    });
    const parts = [
      el("h4", { text: `${candidate}: ${integer.format(figures.compared)} compared, ${integer.format(figures.differing)} differing (${percent(figures.differing, figures.compared)}), ${integer.format(figures.skipped)} skipped` }),
      el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "endpoint" }), el("th", { class: "num", text: "compared" }), el("th", { class: "num", text: "differing" }), el("th", { class: "num", text: "rate" }))), el("tbody", {}, ...rows))),
    ];
    if (!endpoints.length) parts.push(el("p", { class: "muted", text: "nothing compared yet" }));
    const chosen = selection && selection.candidate === candidate && figures.endpoints ? figures.endpoints[selection.endpoint] : null;
    if (chosen) {
      const fields = Object.entries(chosen.fields || {}).sort(([, x], [, y]) => y.raw - y.noise - (x.raw - x.noise));
      parts.push(
        el("h4", { text: `Fields of ${selection.endpoint}` }),
        el(
          "div",
          { class: "table-wrap" },
          el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", { text: "field" }), el("th", { class: "num", text: "raw" }), el("th", { class: "num", text: "noise" }), el("th", { text: "verdict" }), el("th", { text: "kinds" }), el("th", { text: "" }))),
            el(
              "tbody",
              {},
              ...fields.map(([field, f]) =>
                el(
                  "tr",
                  {},
                  el("td", { class: "mono", text: field }),
                  el("td", { class: "num", text: integer.format(f.raw) }),
                  el("td", { class: "num", text: integer.format(f.noise) }),
                  el("td", { class: `verdict-${f.verdict}`, text: f.verdict }),
                  el("td", { text: Object.entries(f.kinds || {}).map(([k, n]) => `${k} ${n}`).join(", ") }),
                  el("td", {}, el("button", { type: "button", "data-key": `sample\0${inbound}\0${candidate}\0${selection.endpoint}\0${field}`, text: "Sample", onclick: () => loadSample(inbound, candidate, selection.endpoint, field) })),
                ),
              ),
            ),
          ),
        ),
      );
      if (selection.field) parts.push(sampleView(selection));
    }
    return el("div", { class: "candidate", "data-candidate": candidate }, ...parts);
  }

  function updateCompare(view, report) {
    view.report = report;
    const inbound = view.name;
    if (!report) {
      view.compare.hidden = true;
      view.compare.replaceChildren();
      view.compareKey = null;
      return;
    }
    // Rebuilt only when the report changed, and not while a button is being
    // pressed (the click would be lost) or text in it is selected.
    const key = JSON.stringify(report);
    if (key === view.compareKey) return;
    const selected = window.getSelection();
    if (state.pointerDown || (selected && !selected.isCollapsed && view.compare.contains(selected.anchorNode))) return;
    view.compareKey = key;
    const selection = state.selection.get(inbound);
    const candidates = Object.entries(report.candidates || {});
    keepingFocus(() => {
      view.compare.hidden = false;
      view.compare.replaceChildren(
        el(
          "div",
          { class: "compare-head" },
          el("h3", { text: "Comparison" }),
          el("span", { class: "muted", text: `primary ${report.primary ?? "–"}${report.baseline ? `, baseline ${report.baseline}` : ""}` }),
          el("span", { class: "spacer" }),
          el("button", { type: "button", class: "danger", "data-key": `reset\0${inbound}`, "data-action": "reset-compare", text: "Reset comparison", onclick: () => resetCompare(inbound) }),
        ),
        ...(candidates.length ? candidates.map(([name, figures]) => candidateView(inbound, name, figures, selection)) : [el("p", { class: "muted", text: "no candidate" })]),
      );
    });
  }

  // ---- Refresh -------------------------------------------------------------

  function render(inbounds, stats, reports, bound) {
    const main = $("#inbounds");
    const now = Date.now();
    const names = new Set();
    inbounds.forEach((config, index) => {
      const name = config.name ?? config.listen;
      names.add(name);
      let view = state.inbounds.get(name);
      if (!view) {
        view = buildInbound(name);
        state.inbounds.set(name, view);
      }
      if (main.children[index] !== view.el) main.insertBefore(view.el, main.children[index] || null);
      updateInbound(view, config, stats[name] || {}, reports[index], bound[name], now);
    });
    for (const [name, view] of state.inbounds) {
      if (!names.has(name)) {
        view.el.remove();
        state.inbounds.delete(name);
        state.selection.delete(name);
      }
    }
    let empty = main.querySelector(".empty");
    if (!inbounds.length && !empty) {
      empty = el("p", { class: "empty", text: "No inbound: add one with POST /v1/nfork or the config file." });
      main.append(empty);
    } else if (inbounds.length && empty) {
      empty.remove();
    }
  }

  async function compareReport(config) {
    if (!config.compare) return null;
    try {
      return await api("GET", `/v1/nfork/${enc(config.name ?? config.listen)}/compare`);
    } catch (e) {
      if (e.status === 404) return null; // turned off since the listing
      throw e;
    }
  }

  /** The address each inbound is bound to (its port when it listens on 0). */
  async function boundAddresses() {
    try {
      const health = await api("GET", "/healthz");
      return (health && health.inbounds) || {};
    } catch {
      return {}; // 503 while starting or stopping: the listen values alone
    }
  }

  let running = false;
  async function refresh() {
    clearTimeout(state.timer);
    if (running) return;
    running = true;
    try {
      if (!state.paused) {
        const [inbounds, stats, bound] = await Promise.all([api("GET", "/v1/nfork"), api("GET", "/v1/nfork/stats"), boundAddresses()]);
        const reports = await Promise.all(inbounds.map(compareReport));
        render(inbounds, stats, reports, bound);
        state.lastOk = new Date();
        setStatus(`${inbounds.length} inbound${inbounds.length === 1 ? "" : "s"} · updated ${state.lastOk.toLocaleTimeString()}`);
      }
      $("#forget-token").hidden = !state.token;
    } catch (e) {
      if (e.status === 401) {
        running = false;
        askToken(Boolean(state.token));
        return; // until a token is given
      }
      setStatus(`refresh failed: ${e.message}${state.lastOk ? ` (last update ${state.lastOk.toLocaleTimeString()})` : ""}`, true);
    } finally {
      running = false;
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  function setup() {
    setupToken();
    setupConfirm();
    $("#error-close").addEventListener("click", () => {
      $("#error").hidden = true;
    });
    const pause = $("#pause");
    pause.addEventListener("click", () => {
      state.paused = !state.paused;
      pause.setAttribute("aria-pressed", String(state.paused));
      pause.textContent = state.paused ? "Resume" : "Pause";
      setStatus(state.paused ? "paused" : "resuming…");
      if (!state.paused) refresh();
    });
    window.addEventListener("error", (event) => showError(`dashboard error: ${event.message}`));
    document.addEventListener("pointerdown", () => {
      state.pointerDown = true;
    });
    document.addEventListener("pointerup", () => {
      state.pointerDown = false;
    });
    document.addEventListener("pointercancel", () => {
      state.pointerDown = false;
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
