/* Consent Gateway snippet: banner, script blocking, Consent Mode v2, GPC, memory and records.
 * The server minifies this file once (rjsmin) and puts the visitor's resolved config where
 * __CG_CONFIG__ stands. Written for evergreen browsers (ES2017, Shadow DOM). */
((w, d) => {
  "use strict";
  const C = __CG_CONFIG__;
  const api = w.ConsentGateway;
  // Idempotent init: a second copy (single-page apps re-inserting the tag) only re-scans.
  if (api && api.scan) return api.scan();

  const RULE = C.rule, CK = C.cookie, P = C.purposes, CM = C.consent_mode || {};
  const OPT = P.filter((p) => !p.essential);
  const SEL = 'script[type="text/plain"][data-category],iframe[data-src][data-category]';
  const QKEY = "cg_queue", RKEY = "cg_receipt", ACT = "data-cg-action", PUR = "data-cg-purpose";
  const gpc = !!(RULE.gpc && (C.gpc || navigator.globalPrivacyControl === true));
  const fns = {};
  let host, root, layer, backdrop, lastFocus, live, opener, flushing, tries = 0, mem = [];
  let state = readCookie();

  // ---- small helpers -------------------------------------------------------------------
  const $$ = (n, s) => Array.from(n.querySelectorAll(s));
  const attr = (el, a) => el.getAttribute(a);
  const ids = (g) => OPT.filter((p) => g[p.id]).map((p) => p.id);
  function rid() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128; // RFC 4122 version 4 layout
    return Array.from(b, (x, i) => ([4, 6, 8, 10].includes(i) ? "-" : "") + (x + 256).toString(16).slice(1)).join("");
  }
  function store(k, v) {
    try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* storage off: memory only */ }
  }
  function load(k) { try { return JSON.parse(localStorage.getItem(k)); } catch (e) { return null; } }
  function emit(n, detail) {
    (fns[n] || []).slice().forEach((f) => { try { f(detail); } catch (e) { setTimeout(() => { throw e; }); } });
    w.dispatchEvent(new CustomEvent("cg:" + n, { detail }));
  }

  // ---- memory: one compact first-party cookie ------------------------------------------
  // value = v1|revision|subject|time36|action|granted~ids  (fields URI-encoded)
  function readCookie() {
    const m = d.cookie.match(new RegExp("(?:^|; )" + CK.name + "=([^;]*)")), g = {};
    const f = m ? m[1].split("|").map(decodeURIComponent) : [];
    if (f[0] != "v1" || f.length < 6) return null;
    OPT.forEach((p) => { g[p.id] = f[5].split("~").includes(p.id); });
    return { revision: f[1], subject_id: f[2], time: parseInt(f[3], 36), action: f[4], choices: g };
  }
  function writeCookie(s) {
    const v = ["v1", s.revision, s.subject_id, s.time.toString(36), s.action, ids(s.choices).join("~")];
    d.cookie = CK.name + "=" + v.map(encodeURIComponent).join("|") + "; Max-Age=" + CK.max_age_days * 86400 +
      "; Path=/; SameSite=Lax" + (CK.domain ? "; Domain=" + CK.domain : "") + (location.protocol == "https:" ? "; Secure" : "");
  }
  function valid(s) {
    if (!s || s.revision != C.consent_revision) return false;
    const days = ids(s.choices).length || !OPT.length ? RULE.reprompt_days : RULE.reprompt_after_refusal_days;
    return !days || Date.now() - s.time < days * 864e5;
  }

  // ---- what is granted now -------------------------------------------------------------
  function defaults() {
    const g = {};
    OPT.forEach((p) => { g[p.id] = !!p.default && !(gpc && p.sale_or_share); });
    return g;
  }
  const current = () => (valid(state) ? state.choices : defaults());
  const granted = (id) => P.some((p) => p.id == id && (p.essential || current()[id]));
  function snapshot() {
    const g = current(), c = {};
    P.forEach((p) => { c[p.id] = !!(p.essential || g[p.id]); });
    return c;
  }

  // ---- Google Consent Mode v2 and dataLayer ----------------------------------------------
  const dl = w.dataLayer = w.dataLayer || [];
  function gtag() { (w.gtag || function () { dl.push(arguments); }).apply(w, arguments); }
  function modeState(g) {
    const m = {};
    P.forEach((p) => (p.consent_mode || []).forEach((t) => {
      if (m[t] != "granted") m[t] = p.essential || g[p.id] ? "granted" : "denied";
    }));
    return m;
  }

  // ---- blocking: inert scripts and iframes until their purposes are granted ---------------
  function activate(el) {
    if (el.hasAttribute("data-cg-done") || !attr(el, "data-category").split(/[\s,]+/).every(granted)) return;
    const src = attr(el, "data-src"), t = attr(el, "data-type");
    el.setAttribute("data-cg-done", "");
    if (el.tagName == "IFRAME") return (el.src = src);
    const s = d.createElement("script");
    for (const a of el.attributes) if (a.name != "type" && a.name != "data-src") s.setAttribute(a.name, a.value);
    // The nonce content attribute is hidden after parsing; the property still holds it.
    s.nonce = el.nonce || attr(el, "nonce") || "";
    if (t) s.type = t;
    if (!el.hasAttribute("async")) s.async = false; // keep document order between blocked scripts
    if (src) s.src = src; else s.text = el.text;
    el.parentNode ? el.replaceWith(s) : d.head.append(s);
  }
  const scan = (n) => $$(n || d, SEL).forEach(activate);
  new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => {
    if (n.nodeType == 1) n.matches(SEL) ? activate(n) : n.firstElementChild && scan(n);
  }))).observe(d.documentElement, { childList: true, subtree: true });

  // ---- withdrawal: delete the purpose's cookies on this host and its parent domains -------
  function dropCookies(p) {
    const parts = location.hostname.split("."), doms = [""];
    for (let i = 0; i < parts.length - 1; i++) doms.push("; Domain=." + parts.slice(i).join("."));
    d.cookie.split("; ").forEach((kv) => {
      const n = kv.split("=")[0];
      if ((p.cookies || []).some((c) => (c.slice(-1) == "*" ? n.startsWith(c.slice(0, -1)) : n == c))) {
        doms.forEach((dm) => { d.cookie = n + "=; Max-Age=0; Path=/" + dm; });
      }
    });
  }

  // ---- records: POST each choice, queue in localStorage, retry when back online -----------
  const queue = () => load(QKEY) || mem;
  function setQueue(q) { mem = q; store(QKEY, q); }
  function flush() {
    const body = queue()[0];
    if (!body || flushing) return Promise.resolve();
    flushing = 1;
    const done = (drop) => {
      flushing = 0;
      if (drop) setQueue(queue().filter((b) => b.idempotency_key != body.idempotency_key));
    };
    return fetch(C.record_url, {
      method: "POST", mode: "cors", credentials: "omit", keepalive: true,
      // text/plain keeps this a simple request: no CORS preflight round trip.
      headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: JSON.stringify(body)
    }).then((r) => {
      if (r.ok) return r.json().then((j) => { done(1); tries = 0; store(RKEY, j); emit("recorded", j); return flush(); });
      // A 4xx other than timeout/rate limit will never succeed: drop it rather than loop.
      if (r.status < 500 && r.status != 408 && r.status != 429) { done(1); emit("error", r.status); return flush(); }
      throw r.status;
    }).catch(() => {
      done(0);
      if (tries < 6) setTimeout(flush, 2e3 * 3 ** tries++);
    });
  }
  w.addEventListener("online", flush);

  // ---- a choice: remember, signal, unblock, record ---------------------------------------
  function choose(g, action) {
    const had = valid(state), before = current(), withdrawn = OPT.filter((p) => before[p.id] && !g[p.id]);
    OPT.forEach((p) => { g[p.id] = !!g[p.id]; });
    if (action != "gpc" && had && !ids(g).length && withdrawn.length) action = "withdraw";
    state = { revision: C.consent_revision, subject_id: (state && state.subject_id) || rid(), time: Date.now(), action, choices: g };
    writeCookie(state);
    gtag("consent", "update", modeState(g));
    dl.push({ event: "cg_consent_update", cg_action: action, cg_consent: snapshot() });
    const last = load(RKEY);
    setQueue(queue().concat([{
      subject_id: state.subject_id, banner_version: C.banner_version, action, choices: g, channel: "web",
      language: C.language, page_url: location.origin + location.pathname, idempotency_key: rid(),
      // A withdrawal names the consent it takes back (the last receipt's record).
      withdraws: action == "withdraw" && last ? last.record_id : undefined
    }]));
    const sent = flush();
    withdrawn.forEach(dropCookies);
    scan();
    emit("change", getConsent());
    // Scripts that already ran cannot be unloaded: reload once the record is on its way.
    if (had && withdrawn.length && CK.reload_on_withdraw && action != "gpc") {
      Promise.race([sent, new Promise((r) => setTimeout(r, 1500))]).then(() => location.reload());
    }
  }
  function getConsent() {
    return valid(state) ? {
      subject_id: state.subject_id, revision: state.revision, action: state.action,
      time: new Date(state.time).toISOString(), choices: snapshot(), gpc, receipt: load(RKEY)
    } : null;
  }

  // ---- UI: Shadow DOM host, lazily parsed layers, focus management -----------------------
  function mount() {
    if (host) return;
    host = d.createElement("div");
    host.id = "cg-host";
    for (const k in C.theme || {}) if (k.startsWith("--")) host.style.setProperty(k, C.theme[k]);
    root = host.attachShadow({ mode: "open" });
    try {
      // Constructable sheets are not inline styles, so a strict style-src CSP still applies them.
      const sh = new CSSStyleSheet();
      sh.replaceSync(C.css);
      root.adoptedStyleSheets = [sh];
    } catch (e) {
      root.append(d.createElement("style"));
      root.firstChild.textContent = C.css;
    }
    live = d.createElement("p");
    live.className = "cg-sr";
    live.setAttribute("role", "status");
    root.append(live);
    root.addEventListener("click", onClick);
    root.addEventListener("keydown", onKey);
    // First in <body> so keyboard users reach it first; position: fixed, so no layout shift.
    d.body.prepend(host);
  }
  const modal = () => layer && attr(layer, "aria-modal") == "true";
  function hide(keep) {
    const was = layer;
    if (backdrop) backdrop.remove();
    if (layer) layer.remove();
    layer = backdrop = null;
    if (was && !keep) {
      emit("hide", attr(was, "data-cg-layer"));
      if (lastFocus && lastFocus.focus && d.contains(lastFocus)) lastFocus.focus();
      lastFocus = null;
    }
  }
  function show(which) {
    if (!d.body) return d.addEventListener("DOMContentLoaded", () => show(which));
    mount();
    if (!layer && !lastFocus) lastFocus = d.activeElement;
    opener = layer && attr(layer, "data-cg-layer");
    hide(1);
    const t = d.createElement("template");
    t.innerHTML = C.html[which];
    layer = t.content.firstElementChild;
    if (modal()) {
      backdrop = d.createElement("div");
      backdrop.className = "cg-backdrop";
      root.append(backdrop);
    }
    const g = current();
    $$(layer, "[" + PUR + "]").forEach((i) => { i.checked = !!g[attr(i, PUR)]; });
    if (gpc) $$(layer, "[data-cg-gpc]").forEach((e) => { e.hidden = false; });
    root.append(layer);
    // A banner that appears on its own does not steal focus unless it is modal.
    if (modal() || opener || lastFocus != d.body) layer.focus();
    emit("show", which);
  }
  // Closing the panel opened from the first layer goes back to it while no choice is made.
  const back = () => (opener == "banner" && !valid(state) ? show("banner") : hide());
  function onClick(e) {
    const b = e.target.closest("[" + ACT + "]");
    let a = b && attr(b, ACT), g = {};
    if (a == "settings") return show("preferences");
    if (a == "close") return back();
    if (a == "accept_all" || a == "reject_all") OPT.forEach((p) => { g[p.id] = a == "accept_all"; });
    else if (a == "save") $$(layer, "[" + PUR + "]").forEach((i) => { g[attr(i, PUR)] = i.checked; });
    else if (a == "ok" || a == "do_not_sell" || a == "limit_sensitive") {
      g = Object.assign({}, current());
      OPT.forEach((p) => {
        if ((a == "do_not_sell" && p.sale_or_share) || (a == "limit_sensitive" && p.separate == "sensitive")) g[p.id] = false;
      });
    } else return;
    const on = ids(g).length;
    a = on == OPT.length ? "accept_all" : on ? "custom" : "reject_all";
    hide();
    live.textContent = C.texts.saved;
    choose(g, a);
  }
  function onKey(e) {
    if (!layer) return;
    if (e.key == "Escape") return e.preventDefault(), back();
    if (e.key != "Tab" || !modal()) return;
    const f = $$(layer, "a[href],button,input:not([disabled])"), at = root.activeElement;
    if (e.shiftKey ? at == f[0] || at == layer : at == f[f.length - 1]) {
      e.preventDefault();
      f[e.shiftKey ? f.length - 1 : 0].focus();
    }
  }
  // A modal layer keeps focus: anything focused outside it is sent back in.
  d.addEventListener("focusin", (e) => { if (modal() && e.target != host) layer.focus(); });
  d.addEventListener("click", (e) => {
    const o = e.target.closest && e.target.closest("[data-cg-open]");
    if (!o) return;
    e.preventDefault();
    lastFocus = o;
    show(attr(o, "data-cg-open") == "preferences" ? "preferences" : "banner");
  });

  // ---- start ---------------------------------------------------------------------------
  gtag("consent", "default", Object.assign({}, CM.default, CM.wait_for_update ? { wait_for_update: CM.wait_for_update } : {}));
  const have = valid(state);
  // Consent Mode does not persist: repeat the update on every page that knows a choice.
  if (have || gpc) gtag("consent", "update", modeState(current()));
  w.ConsentGateway = {
    show: () => show("banner"), showPreferences: () => show("preferences"), hide: () => hide(),
    getConsent, scan: () => scan(), config: C,
    on(n, f) { (fns[n] = fns[n] || []).push(f); return this; },
    off(n, f) { fns[n] = (fns[n] || []).filter((x) => x != f); return this; }
  };
  scan();
  flush();
  dl.push({ event: "cg_consent_ready", cg_consent: snapshot(), cg_has_choice: have });
  emit("ready", getConsent());
  if (gpc && (!have || OPT.some((p) => p.sale_or_share && state.choices[p.id]))) {
    // GPC opts out of sale/sharing: apply it without friction, record it, show it was honoured.
    const g = Object.assign({}, current());
    OPT.forEach((p) => { if (p.sale_or_share) g[p.id] = false; });
    choose(g, "gpc");
    if (!have) show("banner");
  } else if (!have) show("banner");
})(window, document);
