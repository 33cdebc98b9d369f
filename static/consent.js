/* Consent Gateway snippet: banner, script blocking, Consent Mode v2, GPC, memory and records.
 * The server minifies this file once (rjsmin) and puts the visitor's resolved config where
 * __CG_CONFIG__ stands. Written for evergreen browsers (ES2017, Shadow DOM). What the first
 * paint does not need is loaded from the gateway when needed: the preferences panel by part(),
 * the code acting on a choice (static/consent-more.js) by acts(). */
((w, d) => {
  "use strict";
  const C = __CG_CONFIG__;
  const api = w.ConsentGateway;
  // Idempotent init: a second copy (single-page apps re-inserting the tag) only re-scans.
  if (api && api.scan) return api.scan();

  const RULE = C.rule, CK = C.cookie, P = C.purposes, CM = C.consent_mode || {};
  const OPT = P.filter((p) => !p.essential);
  const SEL = 'script[type="text/plain"][data-category],iframe[data-src][data-category]';
  const RKEY = "cg_receipt", SKEY = "cg_state", YKEY = "cg_sync", ACT = "data-cg-action", PUR = "data-cg-purpose";
  // The gateway's URLs, resolved against this script's own src: a relative record_url names
  // the gateway, not the page that embeds it.
  const ME = d.currentScript || {}, API = new URL(C.record_url, ME.src || location.href).href.replace(/consents$/, "");
  const SALE = (p) => p.sale_or_share, SENS = (p) => p.separate == "sensitive", DAY = 864e5;
  // What GPC turns off: sale/sharing where the rule honours it as an opt-out, and purposes that
  // run on an exemption where it counts as an objection (UK).
  const OBJ = (p) => (RULE.gpc && SALE(p)) || (RULE.gpc_objects && p.exempt);
  const gpc = !!((RULE.gpc || RULE.gpc_objects) && (C.gpc || navigator.globalPrivacyControl === true));
  const fns = {};
  let host, root, sheet, layer, backdrop, lastFocus, live, opener, pending, more, css = "";
  const parts = {};
  let state = readState();

  // ---- small helpers -------------------------------------------------------------------
  const $$ = (n, s) => Array.from(n.querySelectorAll(s)), make = (t) => d.createElement(t);
  const attr = (el, a) => el.getAttribute(a);
  const ids = (g) => OPT.filter((p) => g[p.id]).map((p) => p.id);
  function store(k, v) {
    try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* storage off: memory only */ }
  }
  function load(k) { try { return JSON.parse(localStorage.getItem(k)); } catch (e) { return null; } }
  function emit(n, detail) {
    (fns[n] || []).slice().forEach((f) => { try { f(detail); } catch (e) { setTimeout(() => { throw e; }); } });
    w.dispatchEvent(new CustomEvent("cg:" + n, { detail }));
  }

  // ---- memory: one compact first-party cookie, copied to localStorage --------------------
  // value = v4|revision|secret|time36|action|granted~ids|refused~ids|server|checked36 (fields
  // URI-encoded). The refused list also holds *s (every sale/share purpose refused) and *l
  // (every sensitive one), which cover such purposes added later. A v1 value had no list: all
  // it did not grant counts. secret: the subject's secret, from which the server derives the
  // subject id; only its holder writes or reads that subject. v1/v2 held the subject id itself,
  // which the server has stored and shown, so it is no secret: such a visitor gets a new one
  // with their next choice. server: the revision of the subject's state on the server that this
  // memory matches; checked36: when that was last confirmed, in seconds after time (check()).
  function parse(v) {
    const f = v ? v.split("|").map(decodeURIComponent) : [], g = {};
    if (!/^v[1-4]$/.test(f[0]) || f.length < 6) return null;
    OPT.forEach((p) => { g[p.id] = f[5].split("~").includes(p.id); });
    return { revision: f[1], secret: f[0] > "v2" && f[2], time: parseInt(f[3], 36), action: f[4], choices: g,
      off: f[0] == "v1" ? OPT.filter((p) => !g[p.id]).map((p) => p.id) : f[6].split("~"), server: f[7] || "", checked: parseInt(f[3], 36) + parseInt(f[8], 36) * 1e3 || 0 };
  }
  function readState() {
    const m = d.cookie.match(new RegExp("(?:^|; )" + CK.name + "=([^;]*)"));
    return parse(m && m[1]) || parse(load(SKEY));
  }
  // Rewritten on every page, so the cookie's Max-Age runs from the last visit, and copied to
  // localStorage, which outlives a cookie the browser expired or cleared.
  function writeCookie(s) {
    const v = ["v4", s.revision, s.secret, s.time.toString(36), s.action, ids(s.choices).join("~"), s.off.join("~"), s.server, Math.max(0, Math.round((s.checked - s.time) / 1e3)).toString(36)]
      .map(encodeURIComponent).join("|");
    store(SKEY, v);
    d.cookie = CK.name + "=" + v + "; Max-Age=" + CK.max_age_days * 86400 +
      "; Path=/; SameSite=Lax" + (CK.domain ? "; Domain=" + CK.domain : "") + (location.protocol == "https:" ? "; Secure" : "");
  }
  // An answer stands (no banner) while it covers what is asked now and its re-ask period runs:
  // after a consent the shortest length of its months in days (TCF: remind at least every 13
  // months), after a refusal whole calendar months (CCPA: wait 12 months before asking).
  function fresh(s) {
    if (!s || s.revision != C.consent_revision) return false;
    const t = new Date(s.time);
    return ids(s.choices).length || !OPT.length ? Date.now() - s.time < RULE.reprompt_days * DAY
      : Date.now() < t.setMonth(t.getMonth() + RULE.reprompt_after_refusal_months);
  }

  // ---- what is granted now -------------------------------------------------------------
  // Some purposes of a kind exist, and g grants none of them.
  const none = (f, g) => OPT.some(f) && !OPT.some((p) => f(p) && g[p.id]);
  // An opt-out or objection never lapses: not with the re-ask period, the cookie's age or a new
  // consent_revision. The banner may ask again; until the visitor answers, a refusal stands.
  // A prohibited purpose (by law, or for the known minor the site signalled) is never on.
  function current() {
    const g = {}, f = fresh(state) && !pending;
    P.forEach((p) => {
      g[p.id] = !!p.essential || (!p.prohibited && (f ? !!state.choices[p.id] : !!p.default && !(gpc && OBJ(p)) && !pending &&
        !(state && [p.id, SALE(p) && "*s", SENS(p) && "*l"].some((k) => state.off.includes(k)))));
    });
    return g;
  }

  // ---- Google Consent Mode v2 and dataLayer ----------------------------------------------
  const dl = w.dataLayer = w.dataLayer || [];
  function gtag() { (w.gtag || function () { dl.push(arguments); }).apply(w, arguments); }
  const update = (g) => gtag("consent", "update", modeState(g || current()));
  function modeState(g) {
    const m = {};
    P.forEach((p) => (p.consent_mode || []).forEach((t) => {
      if (m[t] != "granted") m[t] = p.essential || g[p.id] ? "granted" : "denied";
    }));
    // An opt-out of sale/sharing covers advertising storage and data use, mapped or not.
    if (none(SALE, g)) ["ad_storage", "ad_user_data", "ad_personalization"].forEach((t) => { m[t] = "denied"; });
    return m;
  }

  // ---- blocking: inert scripts and iframes until their purposes are granted ---------------
  function activate(el) {
    const g = current();
    if (el.hasAttribute("data-cg-done") || !attr(el, "data-category").split(/[\s,]+/).every((c) => g[c])) return;
    const src = attr(el, "data-src"), t = attr(el, "data-type");
    el.setAttribute("data-cg-done", "");
    if (el.tagName == "IFRAME") return (el.src = src);
    const s = make("script");
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

  function getConsent() {
    return fresh(state) ? {
      revision: state.revision, action: state.action,
      time: new Date(state.time).toISOString(), choices: current(), gpc, receipt: load(RKEY)
    } : null;
  }

  // ---- UI: Shadow DOM host, lazily parsed layers, focus management -----------------------
  function mount() {
    if (host) return;
    host = make("div");
    host.id = "cg-host";
    for (const k in C.theme || {}) if (k.startsWith("--")) host.style.setProperty(k, C.theme[k]);
    root = host.attachShadow({ mode: "open" });
    try {
      // Constructable sheets are not inline styles, so a strict style-src CSP still applies them.
      root.adoptedStyleSheets = [sheet = new CSSStyleSheet()];
    } catch (e) {
      sheet = root.appendChild(make("style"));
    }
    style(C.css);
    live = make("p");
    live.className = "cg-sr";
    live.setAttribute("role", "status");
    root.append(live);
    root.addEventListener("click", onClick);
    root.addEventListener("keydown", onKey);
    // First in <body> so keyboard users reach it first; position: fixed, so no layout shift.
    d.body.prepend(host);
  }
  // The shadow root's styles: the first layer's, then each loaded part's.
  function style(add) {
    css += add;
    sheet.replaceSync ? sheet.replaceSync(css) : (sheet.textContent = css);
  }
  // ---- lazily loaded parts (gateway/serving/parts.py): fetched once, on first use ----------
  // A part is JSON from the gateway for the locale, region and age this script was built for
  // (C.part); its css joins the shadow root's. A failed fetch is forgotten, so using the part
  // again asks again.
  function part(n) {
    return parts[n] = parts[n] || fetch(API + "parts/" + n + "?" + C.part, { credentials: "omit" })
      .then((r) => r.ok ? r.json() : Promise.reject(r.status))
      .then((j) => { mount(); if (j.css) style(j.css); return j; }, (e) => { delete parts[n]; throw e; });
  }
  // The code that acts on a choice (static/consent-more.js: records, withdrawal, the server's
  // state) is a script part: loaded once the banner is up, when a choice is queued or the
  // server is to be asked, with this script's nonce. It gets the internals it works with (I).
  const I = { C, OPT, ids, store, load, emit, fresh, current, none, writeCookie, update, scan, OBJ, getConsent, API, st: () => state, put: (s) => writeCookie(state = s) };
  function acts() {
    return more = more || new Promise((ok, no) => {
      const s = make("script");
      w.ConsentGateway._more = (f) => ok(f(I));
      s.src = API + "parts/more.js";
      s.nonce = ME.nonce || "";
      s.onerror = () => { more = 0; no(); };
      d.head.append(s);
    });
  }
  const modal = () => layer && attr(layer, "aria-modal") == "true";
  // CCPA regs 7025(c)(6): a page without the banner (which says so itself) shows in a small
  // badge that the opt-out preference signal was honoured.
  function honoured() {
    if (!d.body) return d.addEventListener("DOMContentLoaded", honoured);
    mount();
    const b = root.appendChild(make("section"));
    b.className = "cg-badge";
    b.textContent = C.texts.gpc_status;
  }
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
    // The panel is a part: shown once it is here (a failure leaves what is shown as it is).
    if (which != "banner") return part(which).then((j) => render(which, j.html), () => {});
    render(which, C.html.banner);
    acts().catch(() => {}); // a choice is next: its code comes while the visitor reads
  }
  function render(which, html) {
    mount();
    if (!layer && !lastFocus) lastFocus = d.activeElement;
    opener = layer && attr(layer, "data-cg-layer");
    hide(1);
    const t = make("template");
    t.innerHTML = html;
    layer = t.content.firstElementChild;
    if (modal()) {
      backdrop = make("div");
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
  const back = () => (opener == "banner" && !fresh(state) ? show("banner") : hide());
  function onClick(e) {
    const b = e.target.closest("[" + ACT + "]"), on = {};
    const a = b && attr(b, ACT);
    if (a == "settings") return show("preferences");
    if (a == "close") return back();
    if (!/^(accept_all|reject_all|save|ok|do_not_sell|limit_sensitive)$/.test(a)) return;
    // The panel's switches are the visitor's own acts, one per purpose; the first layer has none.
    $$(layer, "[" + PUR + "]").forEach((i) => { on[attr(i, PUR)] = i.checked; });
    // Once the code for choices is here (a failure leaves the banner up for another try).
    acts().then((m) => {
      hide();
      live.textContent = C.texts.saved;
      m.click(a, on);
    }, () => {});
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
    const at = (s) => e.target.closest && e.target.closest(s), o = at("[data-cg-open]");
    // The privacy center records on the server: ask it on the next page.
    if (at("a[href*='/privacy-center']")) store(YKEY, 0);
    if (!o) return;
    e.preventDefault();
    lastFocus = o;
    show(attr(o, "data-cg-open") == "preferences" ? "preferences" : "banner");
  });

  // ---- start ---------------------------------------------------------------------------
  // The server puts wait_for_update among the defaults.
  gtag("consent", "default", CM.default);
  // The server is asked (check()) when the state kept here is older than C.state_check seconds,
  // after a visit to the privacy center, and when this browser lost its memory of a choice.
  const rc = load(RKEY);
  pending = rc && rc.secret && rc.subject_id && (load(YKEY) === 0 || !state || !(Date.now() - state.checked < C.state_check * 1e3));
  if (state) writeCookie(state);
  // Consent Mode does not persist: repeat the update on every page that knows a choice.
  if (state || gpc || pending) update();
  w.ConsentGateway = {
    show: () => show("banner"), showPreferences: () => show("preferences"), hide: () => hide(),
    getConsent, scan: () => scan(), config: C, identify: (t) => acts().then((m) => m.identify(t)),
    on(n, f) { (fns[n] = fns[n] || []).push(f); return this; },
    off(n, f) { fns[n] = (fns[n] || []).filter((x) => x != f); return this; }
  };
  scan();
  if ((load("cg_queue") || []).length) acts().then((m) => m.flush(), () => {}); // records still to send
  function start() {
    const have = fresh(state);
    dl.push({ event: "cg_consent_ready", cg_consent: current(), cg_has_choice: have });
    emit("ready", getConsent());
    // GPC opts out (or objects): apply it without friction, record it, show it was honoured.
    if (gpc && (!have || OPT.some((p) => OBJ(p) && state.choices[p.id]))) acts().then((m) => m.gpc(), () => {});
    have ? gpc && honoured() : show("banner");
  }
  // Until the server answers (or cannot), nothing optional runs.
  pending ? acts().then((m) => m.check()).catch(() => {}).then(() => {
    pending = 0;
    update();
    scan();
  }).then(start) : start();
})(window, document);
