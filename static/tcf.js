/* Consent Gateway IAB CMP: __tcfapi (TCF v2.3) and __gpp (GPP 1.1) over the strings the gateway
 * issues for each choice, and the TCF first layer (stacks, vendor count, legitimate interest and
 * the right to object) added to the banner. Loaded by the stub in consent.js only where a site's
 * [tcf]/[gpp] apply; the server puts the localized texts and vendors where __CG_TCF__ stands. */
((w, d) => {
  "use strict";
  const D = __CG_TCF__;
  const CG = w.ConsentGateway, C = CG.config, I = C.iab, G = I.gpp, KEY = "cg_iab";
  const SECS = G ? G.sections.join() : "";
  const tcListeners = new Map(), gppListeners = new Map();
  // No status until there is something to report: listeners are first called with a string
  // (tcloaded), when the banner shows (cmpuishown) or after the choice (useractioncomplete).
  let nextId = 1, eventStatus = "", display = "hidden";
  let S = load();

  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(KEY));
      // Strings stand while the choice does and were issued for this revision, vendor list
      // and set of sections; otherwise they are issued again.
      return s && CG.getConsent() && s.rev == C.consent_revision && s.vlv == (I.vendor_list_version || 0) && s.secs == SECS ? s : null;
    } catch (e) { return null; }
  }
  function save(j) {
    S = { rev: C.consent_revision, vlv: I.vendor_list_version || 0, secs: SECS, tc: j.tc_string || "",
      gpp: j.gpp_string || "", m: (j.iab && j.iab.tcf) || null, g: (j.iab && j.iab.gpp) || null };
    try { localStorage.setItem(KEY, JSON.stringify(S)); } catch (e) { /* memory only */ }
  }

  // ---- __tcfapi ---------------------------------------------------------------------------
  const bools = (ids, keys) => { const o = {}; keys.forEach((k) => { o[k] = (ids || []).includes(+k); }); return o; };
  const range = (n) => Array.from({ length: n }, (_, i) => i + 1);
  const VIDS = D.vendors.map((v) => v.id);
  function tcData(listenerId) {
    const m = (S && S.m) || {}, r = {};
    (m.publisherRestrictions || []).forEach((x) => {
      r[x.purposeId] = r[x.purposeId] || {};
      x.vendorIds.forEach((v) => { r[x.purposeId][v] = x.restrictionType; });
    });
    return {
      tcString: (S && S.tc) || "", tcfPolicyVersion: D.policy_version, cmpId: I.cmp_id, cmpVersion: D.cmp_version,
      gdprApplies: !!I.tcf, eventStatus, cmpStatus: "loaded", listenerId, isServiceSpecific: true,
      useNonStandardTexts: false, publisherCC: D.publisher_cc, purposeOneTreatment: false,
      purpose: { consents: bools(m.purposeConsents, range(11)), legitimateInterests: bools(m.purposeLegitimateInterests, range(11)) },
      vendor: { consents: bools(m.vendorConsents, VIDS), legitimateInterests: bools(m.vendorLegitimateInterests, VIDS) },
      specialFeatureOptins: bools(m.specialFeatureOptins, range(2)),
      publisher: { consents: {}, legitimateInterests: {}, customPurpose: { consents: {}, legitimateInterests: {} }, restrictions: r }
    };
  }
  function tcfapi(command, version, cb, param) {
    if (typeof cb != "function") return;
    if (command == "ping") {
      return cb({ gdprApplies: !!I.tcf, cmpLoaded: true, cmpStatus: "loaded", displayStatus: display, apiVersion: "2.3",
        cmpVersion: D.cmp_version, cmpId: I.cmp_id, gvlVersion: D.vendor_list_version, tcfPolicyVersion: D.policy_version }, true);
    }
    if (command == "getTCData") return cb(tcData(), true);
    if (command == "addEventListener") {
      const id = nextId++;
      tcListeners.set(id, cb);
      if (eventStatus) cb(tcData(id), true);
      return;
    }
    if (command == "removeEventListener") return cb(tcListeners.delete(param), true);
    cb(null, false);
  }
  const tcNotify = () => tcListeners.forEach((cb, id) => { try { cb(tcData(id), true); } catch (e) { setTimeout(() => { throw e; }); } });

  // ---- __gpp ------------------------------------------------------------------------------
  const gppString = () => (S ? S.gpp : G.string) || "";
  const parsed = () => { const p = Object.assign({}, (S ? S.g : G.data) || {}); delete p.header; return p; };
  function pingData() {
    const p = parsed(), ids = Object.keys(p).map((n) => G.ids[n]);
    return { gppVersion: "1.1", cmpStatus: "loaded", cmpDisplayStatus: display, signalStatus: "ready",
      supportedAPIs: Object.keys(G.ids).map((n) => G.ids[n] + ":" + n), cmpId: G.cmp_id, sectionList: ids,
      applicableSections: ids.length ? ids : [-1], gppString: gppString(), parsedSections: p };
  }
  function gppapi(command, cb, param) {
    if (typeof cb != "function") return;
    const p = parsed();
    if (command == "ping") return cb(pingData(), true);
    if (command == "addEventListener") {
      const id = nextId++;
      gppListeners.set(id, cb);
      return cb({ eventName: "listenerRegistered", listenerId: id, data: true, pingData: pingData() }, true);
    }
    if (command == "removeEventListener") return cb(gppListeners.delete(param), true);
    if (command == "hasSection") return cb(param in p, true);
    if (command == "getSection") return cb(p[param] || null, true);
    if (command == "getField") {
      const [sec, field] = String(param).split(".");
      return cb(p[sec] && field in p[sec] ? p[sec][field] : null, true);
    }
    cb(null, false);
  }
  function gppNotify(name, data) {
    gppListeners.forEach((cb, id) => {
      try { cb({ eventName: name, listenerId: id, data, pingData: pingData() }, true); } catch (e) { setTimeout(() => { throw e; }); }
    });
  }

  // ---- strings: from each record's answer, refreshed when they no longer stand -------------
  function update(j, status) {
    save(j);
    eventStatus = status;
    display = "hidden";
    if (I.cmp_id) tcNotify();
    if (G) {
      Object.keys(parsed()).forEach((n) => gppNotify("sectionChange", n));
      gppNotify("signalStatus", "ready");
    }
  }
  CG.on("recorded", (j) => { if (j && (j.tc_string || j.gpp_string)) update(j, "useractioncomplete"); });
  CG.on("show", (which) => {
    display = "visible";
    if (which == "banner") firstLayer();
    if (!S) { eventStatus = "cmpuishown"; if (I.cmp_id) tcNotify(); }
    if (G) gppNotify("cmpDisplayStatus", "visible");
  });
  const consent = CG.getConsent(), last = consent && consent.receipt;
  // The last record's answer (kept by consent.js) has the strings when it came before this script.
  if (!S && last && (last.tc_string || last.gpp_string)) {
    save(last);
    const m = S.m, secs = Object.keys(S.g || {}).filter((n) => n != "header").join();
    if ((m && m.vendorListVersion != I.vendor_list_version) || (!m && I.tcf && I.cmp_id) || (S.g && secs != SECS)) S = null;
  }
  if (!S && consent && D.strings_url) {
    fetch(new URL(D.strings_url, C.record_url || location.href).href, {
      method: "POST", credentials: "omit", headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body: JSON.stringify({ choices: consent.choices, gpc: consent.gpc })
    }).then((r) => (r.ok ? r.json() : null)).then((j) => { if (j) update(j, "tcloaded"); }).catch(() => {});
  }

  // ---- the first layer: what TCF requires the banner to say --------------------------------
  const css = ".cg-tcf{max-height:38vh;overflow:auto;margin:.5rem 0;font-size:.875rem}.cg-tcf ul{margin:.25rem 0;padding-inline-start:1.25rem}" +
    ".cg-tcf summary{cursor:pointer}.cg-tcf details p{margin:.25rem 0;color:var(--cg-muted)}";
  function el(tag, text, cls) {
    const e = d.createElement(tag);
    if (text) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function item(name, description) {
    const li = el("li"), det = li.appendChild(el("details"));
    det.append(el("summary", name), el("p", description));
    return li;
  }
  function firstLayer() {
    const host = d.getElementById("cg-host"), root = host && host.shadowRoot;
    const banner = root && root.querySelector("[data-cg-layer=banner]");
    if (!banner || banner.querySelector(".cg-tcf") || !I.tcf) return;
    try {
      const sh = new CSSStyleSheet();
      sh.replaceSync(css);
      root.adoptedStyleSheets = root.adoptedStyleSheets.concat([sh]);
    } catch (e) { /* unstyled */ }
    const T = D.texts, box = el("div", "", "cg-tcf");
    box.setAttribute("data-cg-tcf", "");
    box.append(el("p", T.intro), el("strong", T.purposes));
    const list = box.appendChild(el("ul"));
    D.items.forEach((x) => list.append(item(x.name, x.description)));
    box.append(el("p", T.legitimate_interest));
    const vend = box.appendChild(el("details")), vl = el("ul");
    vend.append(el("summary", T.vendors), vl);
    D.vendors.forEach((v) => {
      const li = vl.appendChild(el("li", v.name + " "));
      const names = (ids) => ids.map((i) => D.purposes[i]).join(", ");
      if (v.consent.length) li.append(el("small", T.consent + ": " + names(v.consent) + ". "));
      if (v.li.length) li.append(el("small", T.legitimate_interest_short + ": " + names(v.li) + ". "));
      if (v.policy) { const a = li.appendChild(el("a", T.privacy_policy)); a.href = v.policy; a.rel = "noopener"; a.target = "_blank"; }
    });
    const buttons = banner.querySelector(".cg-buttons");
    banner.insertBefore(box, buttons);
  }

  if (S) eventStatus = "tcloaded";

  // ---- take over from the stubs -------------------------------------------------------------
  const tq = w.__tcfapi && w.__tcfapi.queue, gq = w.__gpp && w.__gpp.queue;
  if (I.cmp_id) w.__tcfapi = tcfapi;
  if (G) w.__gpp = gppapi;
  (tq || []).forEach((a) => tcfapi.apply(null, a));
  (gq || []).forEach((a) => gppapi.apply(null, a));
  // Vendors that registered with the stub learn that the signal is ready (it is: the strings
  // known now are current; a refresh or a choice sends sectionChange and signalStatus again).
  if (G) gppNotify("signalStatus", "ready");
  if (d.getElementById("cg-host")) firstLayer();
  if (!S && I.tcf && !consent) { eventStatus = "cmpuishown"; display = "visible"; if (I.cmp_id) tcNotify(); }
})(window, document);
