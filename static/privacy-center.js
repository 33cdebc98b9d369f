/* My privacy center: reads and changes a subject's consents and contact preferences through the
 * gateway's public API on this page's origin. No data of its own, no third party, no inline
 * script (the page's CSP allows only this file). Written for evergreen browsers (ES2017). */
(() => {
  "use strict";
  const d = document, $ = (s, n) => (n || d).querySelector(s), $$ = (s, n) => Array.from((n || d).querySelectorAll(s));
  const json = (id) => JSON.parse(d.getElementById(id).textContent);
  const C = json("cg-center-config"), T = json("cg-center-texts");
  const status = $("#status");
  const say = (text) => { status.textContent = ""; setTimeout(() => { status.textContent = text; }, 50); };
  const url = (name, params) => C.urls[name].replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(params[k]));
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  const KEY = "cg_center:" + C.site;
  const hex = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (x) => (x + 256).toString(16).slice(1)).join("");
  const read = (store, k) => { try { return JSON.parse(store.getItem(k)); } catch (e) { return null; } };
  const keep = (store, k, v) => { try { store.setItem(k, JSON.stringify(v)); } catch (e) { /* storage off: this page only */ } };

  // ---- who is this? ---------------------------------------------------------------------
  // The site links here with the visitor's credential in the fragment (never sent to a server):
  // subject + secret (reads and changes), a receipt (reads for a day) or an identity token from
  // the site's backend (a customer). Kept for this tab, then taken out of the address bar.
  // On the site's own origin (the gateway behind the site's proxy) the snippet's memory works too.
  function credential() {
    const h = new URLSearchParams(location.hash.slice(1));
    let c = read(sessionStorage, KEY) || {};
    if (h.get("secret") || h.get("receipt") || h.get("token")) {
      c = { subject: h.get("subject"), secret: h.get("secret"), receipt: h.get("receipt"), token: h.get("token") };
      history.replaceState(null, "", location.pathname + location.search);
    }
    const own = read(localStorage, "cg_receipt");
    if (!c.secret && !c.receipt && !c.token && own && own.secret) {
      c = { subject: own.subject_id, secret: own.secret, receipt: own.receipt };
    }
    if (!c.subject && c.receipt) {
      try { c.subject = JSON.parse(atob(c.receipt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).u; } catch (e) { /* not a receipt */ }
    }
    return c;
  }
  let cred = credential(), customer = null;
  const auth = () => ({ Authorization: cred.secret ? "Subject " + cred.secret : "Bearer " + cred.receipt });
  async function call(name, params, body) {
    const init = body ? { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }
      : { headers: auth(), cache: "no-store" };
    const r = await fetch(url(name, params || {}), init);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(data.error || String(r.status)), { status: r.status, data });
    return data;
  }
  // A customer: present the site's identity token with this browser's own subject secret for
  // the privacy center (kept on this origin), which links it and returns the customer's state.
  async function identify() {
    const mine = read(localStorage, KEY + ":secret") || hex();
    keep(localStorage, KEY + ":secret", mine);
    const answer = await call("identify", {}, { subject_secret: mine, token: cred.token });
    cred = { subject: answer.subject_id, secret: mine, customer: answer };
  }

  // ---- consents --------------------------------------------------------------------------
  const form = $("#choices");
  const boxes = () => $$("input[name]", form);
  // A form the visitor is editing is not refilled from the server until they save it.
  const dirty = new Set();
  let savedConsent = null; // the record id of the consents last saved on this page
  function showConsents(choices) {
    if (dirty.has(form)) return;
    boxes().forEach((i) => { if (i.name in choices) i.checked = !!choices[i.name]; });
  }
  // The same purpose may sit under several product lines: its boxes move together.
  form.addEventListener("change", (e) => {
    dirty.add(form);
    if (e.target.name) $$(`input[name="${e.target.name}"]`, form).forEach((i) => { i.checked = e.target.checked; });
  });
  async function recordConsent(withdraw) {
    if (!cred.secret) return say(T.read_only);
    const choices = {};
    C.purposes.filter((p) => !p.essential).forEach((p) => {
      const box = $(`input[name="${p.id}"]`, form);
      choices[p.id] = !withdraw && !!box && box.checked && !p.prohibited;
    });
    const on = Object.values(choices);
    // A separate consent is its own box, never part of an "accept all" (PIPL Arts. 23, 29, 39).
    const all = on.every(Boolean) && !C.purposes.some((p) => p.separate);
    const action = withdraw ? "withdraw" : all ? "accept_all" : on.some(Boolean) ? "custom" : "reject_all";
    try {
      const answer = await call("consents", {}, {
        subject_secret: cred.secret, banner_version: C.banner_version, action, choices, channel: "web",
        language: C.language, page_url: location.origin + location.pathname, idempotency_key: hex()
      });
      cred.receipt = answer.receipt;
      save();
      say(T.saved);
      // Saved: the server's state may show again, once it holds this record (a load started
      // later for an older save must not put the choices from before it back on screen).
      savedConsent = answer.record_id;
      dirty.delete(form);
      if (withdraw) showConsents(choices);
      await loadHistory(answer.record_id);
    } catch (e) { say(T.error); }
  }

  // ---- contact preferences ---------------------------------------------------------------
  const forms = () => $$("form.prefs");
  function fill(f, state) {
    const s = state || {}, channels = s.channels || {}, topics = s.topics || {};
    $$("input,select", f).forEach((el) => {
      const [kind, id, channel] = el.name.split(":"), topic = topics[id] || {};
      if (kind == "channel") el.checked = channels[id] === true;
      else if (kind == "topic") el.checked = topic.enabled === true;
      else if (kind == "frequency" && topic.frequency) el.value = topic.frequency;
      else if (kind == "topic-channel") el.checked = (topic.channels || {})[channel] !== false;
    });
  }
  function collect(f) {
    const out = { channels: {}, topics: {} };
    $$("input,select", f).forEach((el) => {
      const [kind, id, channel] = el.name.split(":");
      if (kind == "channel") out.channels[id] = el.checked;
      else if (kind == "topic") out.topics[id] = Object.assign(out.topics[id] || {}, { enabled: el.checked, frequency: null });
      else if (kind == "frequency") out.topics[id].frequency = el.value;
      else if (kind == "topic-channel") {
        const t = out.topics[id];
        t.channels = Object.assign(t.channels || {}, { [channel]: el.checked });
      }
    });
    return out;
  }
  function showPreferences(byLine) {
    const all = byLine[""];
    forms().forEach((f) => {
      const line = f.dataset.line, own = byLine[line];
      if (dirty.has(f)) return;
      // A product line without its own state follows the site-wide one (as contactability does).
      fill(f, own || all);
      $("[data-own]", f.parentNode).hidden = !(line && own);
    });
  }
  const same = (a, b) => JSON.stringify(a) == JSON.stringify(b);
  async function recordPreferences(f) {
    if (!cred.secret) return say(T.read_only);
    const line = f.dataset.line, preferences = collect(f);
    const body = { subject_id: cred.subject, subject_secret: cred.secret, preferences, channel: "web" };
    if (line) body.product_line = line;
    try {
      const answer = await call("preferences", {}, body);
      if (answer.receipt) cred.receipt = answer.receipt;
      save();
      say(T.prefs_saved);
      // The store has the change a moment after the 201 (the forwarder batches): wait for it.
      for (let tries = 0; tries < 20; tries++) {
        const state = await readState();
        if (state && same(pick((state.preferences || {})[line], preferences), preferences)) break;
        await pause(250);
      }
      dirty.delete(f);
      await loadState();
      await loadHistory(answer.record_id);
    } catch (e) { say(T.error); }
  }
  // The part of a stored state that a change names, to compare the two.
  function pick(state, change) {
    const s = state || {}, out = { channels: {}, topics: {} };
    for (const k in change.channels) out.channels[k] = (s.channels || {})[k];
    for (const k in change.topics) {
      const t = (s.topics || {})[k] || {};
      out.topics[k] = { enabled: t.enabled, frequency: t.frequency === undefined ? null : t.frequency };
      if (change.topics[k].channels) out.topics[k].channels = Object.assign({}, ...Object.keys(change.topics[k].channels).map((c) => ({ [c]: (t.channels || {})[c] })));
    }
    return out;
  }
  async function readState() {
    try { return await call("state", { subject: cred.subject }); } catch (e) { return e.status == 404 ? {} : null; }
  }
  let stateGeneration = 0;
  async function loadState() {
    const mine = ++stateGeneration;
    const state = await readState();
    if (mine != stateGeneration) return; // a newer load is on its way
    const byLine = Object.assign({}, (cred.customer && cred.customer.preferences) || {}, (state && state.preferences) || {});
    showPreferences(byLine);
  }

  // ---- history ---------------------------------------------------------------------------
  const when = (s) => new Date(s).toLocaleString(C.language);
  const essential = new Set(C.purposes.filter((p) => p.essential).map((p) => p.id));
  const names = (map, labels) => Object.keys(map || {}).filter((k) => map[k] && !essential.has(k)).map((k) => labels[k] || k).join(", ");
  function describe(rec) {
    if (rec.preferences) {
      const p = rec.preferences, L = C.labels, parts = [];
      if (rec.product_line) parts.push(L.lines[rec.product_line] || rec.product_line);
      for (const k in p.channels || {}) parts.push((L.channels[k] || k) + ": " + (p.channels[k] ? T.on : T.off));
      for (const k in p.topics || {}) {
        const t = p.topics[k];
        parts.push((L.topics[k] || k) + ": " + (t.enabled === false ? T.off : (L.frequencies[t.frequency] || t.frequency || T.on)));
      }
      return [T.preferences, parts.join("; ")];
    }
    return [(T[rec.action] || rec.action), names(rec.choices, C.labels.purposes) || T.nothing];
  }
  async function shown(rec, box) {
    try {
      const v = await fetch(url("version", { version: rec.banner_version }) + "?" + new URLSearchParams({ lang: rec.language || C.language, rule: rec.rule_id || "default" }));
      if (!v.ok) throw v.status;
      const data = await v.json(), dl = d.createElement("dl");
      // The text in the language the visitor saw it in, marked as such for screen readers.
      dl.lang = data.language.replace("_", "-");
      dl.dir = "auto";
      const add = (term, text) => {
        if (!text) return;
        const dt = dl.appendChild(d.createElement("dt")), dd = dl.appendChild(d.createElement("dd"));
        dt.textContent = term;
        dd.textContent = text;
      };
      add(data.texts.title, data.texts.description);
      const order = C.purposes.map((p) => p.id), ids = Object.keys(data.purposes);
      ids.sort((a, b) => (order.indexOf(a) + 1 || 1e3) - (order.indexOf(b) + 1 || 1e3));
      for (const id of ids) add(data.purposes[id].name, data.purposes[id].description);
      box.append(dl);
    } catch (e) { box.append(T.error); }
  }
  let generation = 0;
  async function loadHistory(expect) {
    // Only the newest call renders: an older one still waiting must not redraw over it.
    const mine = ++generation;
    // The store has a record a moment after its 201 (the forwarder batches): wait for the one
    // this call expects and for the consent last saved here, whichever save started the call.
    const awaited = [expect, savedConsent].filter(Boolean);
    let data, seen = () => false;
    for (let tries = 0; tries < (awaited.length ? 20 : 1); tries++) {
      // Consents from the subject's history, preference changes from its state.
      const [consents, state] = await Promise.all([call("history", { subject: cred.subject }).catch(() => null), readState()]);
      data = consents && Object.assign({}, consents, { preference_history: (state && state.preference_history) || [] });
      const ids = new Set((data ? (data.history || []).concat(data.preference_history) : []).map((h) => h.record_id));
      seen = (id) => ids.has(id);
      if (awaited.every(seen)) break;
      await pause(250);
    }
    if (!data || mine != generation) return;
    // Never the choices from before the visitor's last save: the store may not have it yet.
    if (data.current && data.current.choices && (!savedConsent || seen(savedConsent))) showConsents(data.current.choices);
    const body = $("#history tbody"), records = (data.history || []).concat(data.preference_history || [])
      .sort((a, b) => (a.recorded_at < b.recorded_at ? 1 : -1)).slice(0, 20);
    body.textContent = "";
    const heads = $$("#history th").map((th) => th.textContent);
    for (const rec of records) {
      const tr = body.insertRow(), [what, detail] = describe(rec);
      [when(rec.recorded_at), what, detail].forEach((text) => { tr.insertCell().textContent = text; });
      const cell = tr.insertCell();
      // Narrow screens show each row as a card: every cell carries its column's name.
      Array.from(tr.cells).forEach((td, i) => { td.dataset.label = heads[i]; });
      if (rec.banner_version) {
        const box = cell.appendChild(d.createElement("details")), summary = box.appendChild(d.createElement("summary"));
        box.className = "shown";
        summary.textContent = T.show;
        box.addEventListener("toggle", () => { if (box.open && !box.dataset.done) { box.dataset.done = 1; shown(rec, box); } });
      }
    }
    $("#history").hidden = !records.length;
  }

  // ---- rights ------------------------------------------------------------------------------
  let pendingRequest = null;
  function received(made) {
    const r = $("#rights-received"), time = $("time", r);
    time.dateTime = made.due_at;
    time.textContent = new Date(made.due_at).toLocaleDateString(C.language);
    r.hidden = false;
    if (made.download_url) {
      $("#rights-download").href = made.download_url;
      $("#rights-ready").hidden = false;
    }
  }
  async function ask(button) {
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    const body = { type: button.dataset.right, language: C.language };
    const email = $("#rights-email");
    if (cred.receipt) body.receipt = cred.receipt;
    else if (email && email.value.trim()) body.identity = { type: "email", value: email.value.trim() };
    else { say(T.email_needed); if (email) email.focus(); return; }
    try {
      const made = await call("rights", {}, body);
      if (made.status == "verifying") {
        pendingRequest = made;
        $("#rights-code").hidden = false;
        say(T.code_sent);
        $("#rights-code-input").focus();
        return;
      }
      received(made);
    } catch (e) { say(T.error); }
  }
  async function verify(e) {
    e.preventDefault();
    if (!pendingRequest) return;
    const code = $("#rights-code-input").value.trim();
    const r = await fetch(C.urls.rights + "/" + encodeURIComponent(pendingRequest.request_id) + "/verify", {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + pendingRequest.token },
      body: JSON.stringify({ code })
    });
    if (!r.ok) return say(r.status == 403 ? T.code_wrong : T.error);
    $("#rights-code").hidden = true;
    pendingRequest = null;
    received(await r.json());
  }

  // ---- start -------------------------------------------------------------------------------
  function save() { keep(sessionStorage, KEY, { subject: cred.subject, secret: cred.secret, receipt: cred.receipt, customer: cred.customer }); }
  function wire() {
    form.addEventListener("submit", (e) => { e.preventDefault(); recordConsent(false); });
    $("#withdraw").addEventListener("click", () => recordConsent(true));
    forms().forEach((f) => {
      f.addEventListener("submit", (e) => { e.preventDefault(); recordPreferences(f); });
      f.addEventListener("change", () => dirty.add(f));
      // Withdrawing is as easy as agreeing: every channel and topic off, saved at once.
      $("[data-all-off]", f).addEventListener("click", () => {
        $$('input[name^="channel:"],input[name^="topic:"]', f).forEach((i) => { i.checked = false; });
        recordPreferences(f);
      });
    });
    const rights = $("#rights");
    if (rights) {
      rights.hidden = false;
      $$("button[data-right]", rights).forEach((b) => b.addEventListener("click", () => ask(b)));
      $("#rights-code").addEventListener("submit", verify);
      const row = $("#rights-email-row");
      if (row) row.hidden = !!cred.receipt;
    }
  }
  async function start() {
    wire();
    if (cred.token) {
      try { await identify(); } catch (e) { cred = {}; say(T.error); }
    }
    save();
    if (!cred.subject || !(cred.secret || cred.receipt)) return;
    customer = cred.customer;
    $("#no-receipt").hidden = true;
    $(customer ? "#who-customer" : "#who-anonymous").hidden = false;
    if (cred.secret) {
      $("#actions").hidden = false;
      // A purpose the law prohibits here is never offered: it stays off and cannot be switched on.
      $$("input[name]:not([data-prohibited])", form).forEach((i) => { i.disabled = false; });
      forms().forEach((f) => $$("input,select,button", f).forEach((el) => { el.disabled = false; }));
    }
    if (customer && customer.consents) showConsents(customer.consents);
    await Promise.all([loadHistory(), loadState()]);
  }
  start();
})();
