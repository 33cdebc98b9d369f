/* Consent Gateway snippet, second part: what acts on a choice (records, withdrawal, the
 * subject's state on the server). consent.js loads it when its banner is up, a record waits to
 * be sent or the server is to be asked; the first paint never waits for it. It registers with
 * ConsentGateway._more and works on the internals consent.js hands it (I). */
((w, d) => {
  "use strict";
  w.ConsentGateway._more((I) => {
    const C = I.C, OPT = I.OPT, CK = C.cookie, QKEY = "cg_queue", RKEY = "cg_receipt", YKEY = "cg_sync";
    const { ids, store, load, current, writeCookie, scan, emit } = I;
    const SALE = (p) => p.sale_or_share, SENS = (p) => p.separate == "sensitive";
    let flushing, tries = 0, mem = [];
    // 128 random bits in hex: subject secrets and idempotency keys.
    const rid = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (x) => (x + 256).toString(16).slice(1)).join("");

    // A choice becomes the state kept in the cookie (consent.js: parse, writeCookie).
    function remember(g, action, revision, secret, time, server) {
      const off = OPT.filter((p) => !g[p.id]).map((p) => p.id);
      if (I.none(SALE, g)) off.push("*s");
      if (I.none(SENS, g)) off.push("*l");
      I.put({ revision, secret, time, action, choices: g, off, server: server || "", checked: Date.now() });
    }

    // The server's revision of a state last changed at t (RFC 3339): microseconds since 1970 in
    // base 36, as the gateway makes its ETag (gateway/web/api.py), so the snippet knows it for
    // its own records without asking.
    const rev = (t) => t ? (Date.parse(t) * 1e3 + +(/\.\d{3}(\d{0,3})/.exec(t) || [0, ""])[1].padEnd(3, "0")).toString(36) : "";

    // ---- withdrawal: delete the purpose's cookies on this host and its parent domains -----
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

    // ---- records: POST each choice, queue in localStorage, retry when back online ---------
    const queue = () => load(QKEY) || mem;
    function setQueue(q) { mem = q; store(QKEY, q); }
    function flush() {
      const q = queue(), body = q[0];
      if (!body || flushing) return Promise.resolve();
      flushing = 1;
      // Counted before it goes (kept with the queue): a body sent before is a retry, which
      // another node may have recorded while its answer was lost; the server looks it up.
      body.attempt = (body.attempt || 0) + 1;
      setQueue(q);
      const done = (drop) => {
        flushing = 0;
        if (drop) setQueue(queue().filter((b) => b.idempotency_key != body.idempotency_key));
      };
      return fetch(I.API + "consents", {
        method: "POST", credentials: "omit", keepalive: true,
        // text/plain keeps this a simple request: no CORS preflight round trip.
        headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: JSON.stringify(body)
      }).then((r) => {
        if (r.ok) return r.json().then((j) => {
          const s = I.st();
          done(1); tries = 0; store(RKEY, Object.assign({ secret: body.subject_secret }, j));
          // The server's state now is this record: no need to ask it about it.
          if (s && s.secret == body.subject_secret) writeCookie(Object.assign(s, { server: rev(j.recorded_at), checked: Date.now() }));
          emit("recorded", j); return flush();
        });
        // A 4xx other than timeout/rate limit will never succeed: drop it rather than loop.
        if (r.status < 500 && r.status != 408 && r.status != 429) { done(1); emit("error", r.status); return flush(); }
        throw r.status;
      }).catch(() => {
        done(0);
        if (tries < 6) setTimeout(flush, 2e3 * 3 ** tries++);
      });
    }
    w.addEventListener("online", flush);

    // ---- a choice: remember, signal, unblock, record -------------------------------------
    function choose(g, action) {
      const was = I.st(), had = I.fresh(was), before = current(), withdrawn = OPT.filter((p) => before[p.id] && !g[p.id]);
      OPT.forEach((p) => { g[p.id] = !!g[p.id]; });
      if (action != "gpc" && had && !ids(g).length && withdrawn.length) action = "withdraw";
      remember(g, action, C.consent_revision, (was && was.secret) || rid(), Date.now(), was && was.server);
      I.update(g);
      w.dataLayer.push({ event: "cg_consent_update", cg_action: action, cg_consent: current() });
      const last = load(RKEY);
      setQueue(queue().concat([{
        subject_secret: I.st().secret, banner_version: C.banner_version, action, choices: g, channel: "web",
        language: C.language, page_url: location.origin + location.pathname, idempotency_key: rid(),
        // A withdrawal names the consent it takes back (the last receipt's record).
        withdraws: action == "withdraw" && last ? last.record_id : undefined
      }]));
      const sent = flush();
      withdrawn.forEach(dropCookies);
      scan();
      emit("change", I.getConsent());
      // Scripts that already ran cannot be unloaded: reload once the record is on its way.
      if (had && withdrawn.length && CK.reload_on_withdraw && action != "gpc") {
        Promise.race([sent, new Promise((r) => setTimeout(r, 1500))]).then(() => location.reload());
      }
    }
    // A button of a layer: its action over the switches the visitor set (on).
    function click(a, on) {
      const g = Object.assign(current(), on);
      OPT.forEach((p) => {
        // "Accept all" never grants a purpose that needs a consent of its own (PIPL Arts. 23,
        // 29, 39): only its own switch does.
        if (a == "reject_all" || (a == "accept_all" && !p.separate && !p.prohibited) ||
          (a == "do_not_sell" && SALE(p)) || (a == "limit_sensitive" && SENS(p))) g[p.id] = a == "accept_all";
      });
      const n = ids(g).length;
      choose(g, n == OPT.length && !OPT.some((p) => p.separate) ? "accept_all" : n ? "custom" : "reject_all");
    }
    // GPC opts out (or objects) without friction: the purposes it covers are turned off.
    function gpc() {
      const g = current();
      OPT.forEach((p) => { if (I.OBJ(p)) g[p.id] = false; });
      choose(g, "gpc");
    }

    // ---- one state everywhere: the subject's state on the server -------------------------
    // The server holds the choices from every channel (privacy center, apps, stores, CRM). The
    // cookie keeps the revision of that state it matches and when it last confirmed it;
    // consent.js has this asked again, with one conditional request (304 when nothing
    // changed), once C.state_check seconds have passed, on the page after a visit to the
    // privacy center, or when this browser lost its memory. Every other page view makes no
    // request. Until it answers, nothing optional runs: a withdrawal made elsewhere stops the
    // tags on that page.
    function check() {
      const r = load(RKEY), s = I.st();
      return fetch(I.API + "subjects/" + r.subject_id, { cache: "no-store", credentials: "omit",
        headers: Object.assign({ Authorization: "Subject " + r.secret }, s && s.server ? { "If-None-Match": '"' + s.server + '"' } : {}) })
        .then((x) => {
          store(YKEY, 1); // asked (a failure asks again on the next page)
          if (x.status == 304 || x.status == 404) return s && writeCookie(Object.assign(s, { checked: Date.now() }));
          if (!x.ok) throw x.status;
          return x.json().then((c) => {
            const t = c.consent_recorded_at;
            // Taken when another channel's record is not older than this browser's last one (or
            // this browser lost its memory) and nothing here is still unsent.
            if (c.consents && t >= (r.recorded_at || "") && !queue().length && (!s || c.consent_record_id != r.record_id)) {
              remember(c.consents, c.consent_action || "custom", c.consent_revision || C.consent_revision, r.secret, Date.parse(t), rev(c.updated_at));
            } else if (s) writeCookie(Object.assign(s, { server: rev(c.updated_at), checked: Date.now() }));
          });
        });
    }
    // ---- identify: the site's backend gave this browser an identity token -------------
    // (ConsentGateway.identify(token), from POST /identity-tokens). The gateway links this
    // browser's subject to the customer's identities and answers the customer's latest
    // choices, which this browser takes: a second device shows no banner and the same choices.
    function identify(token) {
      const s = I.st(), secret = (s && s.secret) || rid();
      return fetch(I.API + "identify", { method: "POST", credentials: "omit",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ subject_secret: secret, token }) })
        .then((r) => r.ok ? r.json() : Promise.reject(r.status))
        .then((c) => {
          if (!load(RKEY)) store(RKEY, { secret, subject_id: c.subject_id });
          if (c.consents && !queue().length) {
            remember(c.consents, c.consent_action || "custom", c.consent_revision || C.consent_revision, secret, Date.parse(c.consent_recorded_at) || Date.now(), s && s.server);
            I.update(c.consents);
            scan();
            if (I.fresh(I.st())) w.ConsentGateway.hide();
            emit("change", I.getConsent());
          }
          emit("identified", c);
          return c;
        });
    }
    return { click, gpc, flush, check, identify };
  });
})(window, document);
