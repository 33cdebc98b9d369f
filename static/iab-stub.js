/* IAB stubs, appended by the server to consent.js only where a site's [tcf]/[gpp] apply to the
 * visitor: __tcfapi and __gpp queue their calls (answering ping at once), the __tcfapiLocator /
 * __gppLocator frames let frames find this window, postMessage calls from frames are answered,
 * and the full CMP (tcf.js, localized and cacheable) is loaded lazily. */
((w, d) => {
  "use strict";
  const CG = w.ConsentGateway, I = CG && CG.config && CG.config.iab, me = d.currentScript;
  if (!I || w.__cgIab) return;
  w.__cgIab = 1;
  function locator(name) {
    if (w.frames[name]) return;
    if (!d.body) return setTimeout(() => locator(name), 5);
    const f = d.createElement("iframe");
    f.style.display = "none";
    f.name = name;
    f.title = name;
    d.body.appendChild(f);
  }
  function stub(name, ping) {
    const q = [];
    const f = function () {
      const a = Array.from(arguments);
      // TCF: (command, version, callback, parameter); GPP: (command, callback, parameter, version)
      if (a[0] == "ping") return ping(a);
      q.push(a);
    };
    f.queue = q;
    w[name] = f;
    locator(name + "Locator");
  }
  if (I.cmp_id) stub("__tcfapi", (a) => a[2]({ gdprApplies: I.tcf, cmpLoaded: false, cmpStatus: "stub", apiVersion: "2.3", cmpId: I.cmp_id }, true));
  if (I.gpp) stub("__gpp", (a) => a[1]({ gppVersion: "1.1", cmpStatus: "stub", cmpDisplayStatus: "hidden", signalStatus: "not ready", supportedAPIs: [], cmpId: I.gpp.cmp_id, sectionList: [], applicableSections: [-1], gppString: "", parsedSections: {} }, true));
  // A frame calls with {__tcfapiCall|__gppCall: {command, parameter, version, callId}} (or that
  // as JSON text) and gets {__tcfapiReturn|__gppReturn: {returnValue, success, callId}} back.
  w.addEventListener("message", (e) => {
    let m = e.data;
    const text = typeof m == "string";
    if (text) { try { m = JSON.parse(m); } catch (x) { return; } }
    if (!m || typeof m != "object") return;
    const t = m.__tcfapiCall, g = m.__gppCall, c = t || g;
    if (!c || !e.source || !w[t ? "__tcfapi" : "__gpp"]) return;
    const reply = (returnValue, success) => {
      const r = { [t ? "__tcfapiReturn" : "__gppReturn"]: { returnValue, success, callId: c.callId } };
      e.source.postMessage(text ? JSON.stringify(r) : r, "*");
    };
    if (t) w.__tcfapi(c.command, c.version, reply, c.parameter);
    else w.__gpp(c.command, reply, c.parameter, c.version);
  });
  const s = d.createElement("script");
  // The CMP comes from the gateway that served this script, with this script's CSP nonce.
  s.src = new URL(I.script, (me && me.src) || location.href).href;
  s.nonce = (me && me.nonce) || "";
  s.async = true;
  (d.head || d.documentElement).appendChild(s);
})(window, document);
