/* Consent Gateway SDK for WeChat mini-programs: plain JavaScript over the wx.* APIs.
 *
 * It fetches the resolved consent config (JSON), shows nothing itself (the mini-program's own
 * UI renders config.texts and config.purposes), records choices and contact preferences with
 * the subject-secret protocol, keeps the subject's secret in the mini-program's storage,
 * reconciles with the server's state, and ties into the platform's privacy authorization
 * (wx.getPrivacySetting, wx.requirePrivacyAuthorize, wx.onNeedPrivacyAuthorization).
 *
 *   const ConsentGateway = require("./consent-gateway.js");
 *   const cg = ConsentGateway.create({ gateway: "https://consent.example.com", site: "demo" });
 *   cg.loadConfig().then(function (config) { if (cg.needsChoice(config)) showMyPopup(config); });
 *   // the popup's buttons: cg.acceptAll(config), cg.rejectAll(config), cg.choose(config, {...})
 *
 * Promises only (no async/await) so that it runs on every base library without a transpiler.
 * Licence: Apache-2.0, like the gateway. */
"use strict";

var VERSION = 1;
var HEX = /^[0-9a-f]{32}$/;

function hex(bytes) {
  var out = "";
  for (var i = 0; i < bytes.length; i++) out += (bytes[i] + 256).toString(16).slice(1);
  return out;
}

function ConsentGatewayError(status, body) {
  var error = new Error((body && body.error) || "request failed with status " + status);
  error.status = status;
  error.body = body;
  return error;
}

function create(options) {
  var opts = options || {};
  var wx = opts.wx || (typeof globalThis !== "undefined" && globalThis.wx);
  if (!wx) throw new Error("no wx object: pass { wx } or run inside a mini-program");
  if (!opts.gateway || !opts.site) throw new Error("options.gateway and options.site are required");
  var base = opts.gateway.replace(/\/+$/, "") + "/v1/sites/" + encodeURIComponent(opts.site);
  var key = opts.storageKey || "consent_gateway:" + opts.site;
  var channel = opts.channel || "miniprogram";

  // ---- storage: one object under one key; the secret never leaves it but in request bodies
  // and the Authorization header of the subject's own reads.
  function load() {
    var value = wx.getStorageSync(key);
    if (typeof value === "string" && value) {
      try { value = JSON.parse(value); } catch (e) { value = null; }
    }
    return value && value.v === VERSION ? value : { v: VERSION, queue: [] };
  }
  function save(state) { wx.setStorageSync(key, JSON.stringify(state)); return state; }

  function random16() {
    return new Promise(function (resolve, reject) {
      if (typeof wx.getRandomValues === "function") {
        wx.getRandomValues({
          length: 16,
          success: function (res) { resolve(hex(new Uint8Array(res.randomValues))); },
          fail: reject,
        });
      } else if (typeof crypto !== "undefined" && crypto.getRandomValues) {
        resolve(hex(crypto.getRandomValues(new Uint8Array(16))));
      } else {
        reject(new Error("no secure random source (wx.getRandomValues needs base library 2.20.2)"));
      }
    });
  }
  // The subject's secret: 128 random bits made here, once. The gateway derives the subject id
  // from it; whoever holds only the id can neither read nor write the subject.
  function secret() {
    var state = load();
    if (state.secret && HEX.test(state.secret)) return Promise.resolve(state.secret);
    return random16().then(function (made) {
      var fresh = load();
      fresh.secret = made;
      save(fresh);
      return made;
    });
  }

  function request(method, path, data, header) {
    return new Promise(function (resolve, reject) {
      wx.request({
        url: path.indexOf("http") === 0 ? path : base + path,
        method: method,
        data: data,
        header: Object.assign({ "content-type": "application/json" }, header || {}),
        dataType: "json",
        success: function (res) {
          if (res.statusCode >= 200 && res.statusCode < 300) resolve(res);
          else reject(ConsentGatewayError(res.statusCode, res.data));
        },
        fail: function (err) { reject(Object.assign(new Error((err && err.errMsg) || "network error"), { status: 0 })); },
      });
    });
  }

  // ---- config ------------------------------------------------------------------------------
  // GET /config with the mini-program's language; a stored copy is revalidated with its ETag.
  function loadConfig(params) {
    var p = Object.assign({}, opts.lang ? { lang: opts.lang } : {}, opts.region ? { region: opts.region } : {}, params || {});
    var query = Object.keys(p).map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(p[k]); }).join("&");
    var state = load();
    var cached = state.config && state.config.query === query ? state.config : null;
    var header = cached && cached.etag ? { "If-None-Match": cached.etag } : {};
    return request("GET", "/config" + (query ? "?" + query : ""), undefined, header).then(function (res) {
      var fresh = load();
      var etag = res.header && (res.header.ETag || res.header.etag);
      fresh.config = { query: query, etag: etag || null, body: res.data };
      save(fresh);
      return res.data;
    }, function (error) {
      if (error.status === 304 && cached) return cached.body;
      if (cached && error.status === 0) return cached.body; // offline: the last config known
      throw error;
    });
  }

  // ---- choices -----------------------------------------------------------------------------
  function optional(config) { return config.purposes.filter(function (p) { return !p.essential; }); }
  // Whether the app must ask: nothing chosen yet, or what is consented to changed since.
  function needsChoice(config) {
    var state = load();
    return !state.choices || state.revision !== config.consent_revision;
  }
  function getConsent() {
    var state = load();
    if (!state.choices) return null;
    return {
      subject_id: state.subject_id || null, revision: state.revision, action: state.action,
      choices: Object.assign({}, state.choices), recorded_at: state.recorded_at || null,
      receipt: state.receipt || null,
    };
  }
  function send(body) {
    // Counted before it goes (kept with the queue): a body sent before is a retry, which
    // another node may have recorded while its answer was lost; the server looks it up.
    body.attempt = (body.attempt || 0) + 1;
    var queued = load();
    (queued.queue || []).forEach(function (b) {
      if (b.idempotency_key === body.idempotency_key) b.attempt = body.attempt;
    });
    save(queued);
    return request("POST", "/consents", body).then(function (res) {
      var state = load();
      state.queue = (state.queue || []).filter(function (b) { return b.idempotency_key !== body.idempotency_key; });
      state.subject_id = res.data.subject_id;
      state.receipt = res.data.receipt;
      state.record_id = res.data.record_id;
      state.recorded_at = res.data.recorded_at;
      state.synced_at = Date.now(); // the server holds what this device just chose
      save(state);
      return res.data;
    });
  }
  // Resend what could not be sent (offline); a refused record (4xx) is dropped, never looped.
  function flush() {
    var queue = load().queue || [];
    return queue.reduce(function (chain, body) {
      return chain.then(function () {
        return send(body).catch(function (error) {
          if (error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429) {
            var state = load();
            state.queue = (state.queue || []).filter(function (b) { return b.idempotency_key !== body.idempotency_key; });
            save(state);
            return;
          }
          throw error;
        });
      });
    }, Promise.resolve());
  }
  // Record a choice: kept locally first (the app may rely on it at once), then sent with an
  // idempotency key so that a retry never makes a second record.
  function record(config, action, choices, extra) {
    var all = {};
    optional(config).forEach(function (p) { all[p.id] = !p.prohibited && !!(choices || {})[p.id]; });
    return Promise.all([secret(), random16()]).then(function (made) {
      var body = Object.assign({
        subject_secret: made[0], banner_version: config.banner_version, action: action,
        choices: all, channel: channel, language: config.language, idempotency_key: made[1],
      }, extra || {});
      var state = load();
      // Kept as the server stores it: the essential purposes are always on.
      state.choices = Object.assign({}, all);
      config.purposes.forEach(function (p) { if (p.essential) state.choices[p.id] = true; });
      state.action = action;
      state.revision = config.consent_revision;
      state.queue = (state.queue || []).concat([body]);
      save(state);
      return send(body).catch(function (error) {
        if (error.status === 0 || error.status >= 500 || error.status === 429) return { queued: true };
        var failed = load();
        failed.queue = (failed.queue || []).filter(function (b) { return b.idempotency_key !== body.idempotency_key; });
        save(failed);
        throw error;
      });
    });
  }
  // "Accept all" never grants a purpose that needs its own consent (PIPL Arts. 23, 29, 39)
  // or one the visitor's rule prohibits: those have their own switches in the app's UI.
  function acceptAll(config) {
    var choices = {};
    optional(config).forEach(function (p) { choices[p.id] = !p.separate && !p.prohibited; });
    return record(config, "accept_all", choices);
  }
  function rejectAll(config) { return record(config, "reject_all", {}); }
  function choose(config, choices) {
    var on = optional(config).filter(function (p) { return choices[p.id]; }).length;
    var total = optional(config).length;
    var separate = optional(config).some(function (p) { return p.separate; });
    var action = on === 0 ? "reject_all" : on === total && !separate ? "accept_all" : "custom";
    return record(config, action, choices);
  }
  function withdraw(config) {
    var state = load();
    return record(config, "withdraw", {}, state.record_id ? { withdraws: state.record_id } : undefined);
  }

  // ---- contact preferences (channels × topics × frequency, per product line) ----------------
  function setPreferences(preferences, options) {
    var o = options || {};
    return secret().then(function (s) {
      var body = { subject_secret: s, preferences: preferences, channel: channel };
      if (load().subject_id) body.subject_id = load().subject_id;
      if (o.product_line) body.product_line = o.product_line;
      return request("POST", "/preferences", body).then(function (res) {
        var state = load();
        if (res.data.subject_id) state.subject_id = res.data.subject_id;
        save(state);
        return res.data;
      });
    });
  }

  // ---- the server's state: one subject, every channel ----------------------------------------
  function authorization(s) { return { Authorization: "Subject " + s }; }
  // Take the server's choice when it is newer than the one kept here (made in the privacy
  // center, the website, a store) and nothing here is still unsent.
  function sync() {
    var state = load();
    if (!state.subject_id || !state.secret) return Promise.resolve(getConsent());
    return flush().then(function () {
      return request("GET", "/subjects/" + state.subject_id + "/consents", undefined, authorization(state.secret));
    }).then(function (res) {
      var current = res.data.current, now = load();
      now.synced_at = Date.now();
      if (current && (!now.recorded_at || current.recorded_at > now.recorded_at) && !(now.queue || []).length) {
        now.choices = current.choices;
        now.action = current.action;
        now.revision = current.consent_revision;
        now.recorded_at = current.recorded_at;
        now.record_id = current.record_id;
      }
      save(now);
      return getConsent();
    });
  }
  // Cheap: ask only when the choice kept here may be stale (another revision, or not asked
  // within maxAgeMs), never on every page of the mini-program.
  function syncIfStale(config, maxAgeMs) {
    var state = load(), age = maxAgeMs === undefined ? 864e5 : maxAgeMs;
    var stale = state.revision !== config.consent_revision || !state.synced_at || Date.now() - state.synced_at > age;
    return stale ? sync() : Promise.resolve(getConsent());
  }
  // The subject's consents, preferences and identity types, read with its own secret.
  function getState() {
    var state = load();
    if (!state.subject_id) return Promise.resolve(null);
    return request("GET", "/subjects/" + state.subject_id, undefined, authorization(state.secret)).then(function (res) { return res.data; });
  }
  // A customer who logged in: the app's backend asks the gateway for an identity token (API
  // key, server side) and hands it here; the subject is linked and gets the customer's choices.
  function identify(token) {
    return secret().then(function (s) {
      return request("POST", "/identify", { subject_secret: s, token: token });
    }).then(function (res) {
      var state = load(), a = res.data;
      state.subject_id = a.subject_id;
      if (a.consents && !state.choices) {
        state.choices = a.consents;
        state.action = "custom";
      }
      save(state);
      return a;
    });
  }

  // ---- the platform's privacy authorization -------------------------------------------------
  function call(name, extra) {
    return new Promise(function (resolve, reject) {
      if (typeof wx[name] !== "function") return resolve(null); // older base library
      wx[name](Object.assign({ success: resolve, fail: reject }, extra || {}));
    });
  }
  // Whether the platform still needs the user's agreement to the privacy guide, and whether the
  // contract name it declares is the one site.toml [wechat] names (a mismatch is a setup error).
  function privacySetting(config) {
    return call("getPrivacySetting").then(function (res) {
      var expected = config && config.wechat && config.wechat.privacy_contract_name;
      return {
        needAuthorization: !!(res && res.needAuthorization),
        privacyContractName: res ? res.privacyContractName : null,
        matchesConfig: !expected || !res || res.privacyContractName === expected,
      };
    });
  }
  // When a privacy API is first used, the platform asks; the app's own popup (with a button
  // open-type="agreePrivacyAuthorization" id=config.wechat.agree_button_id) answers through
  // agree(choices) or disagree(), which record the choice and then tell the platform.
  function onNeedPrivacyAuthorization(config, show) {
    if (typeof wx.onNeedPrivacyAuthorization !== "function") return;
    wx.onNeedPrivacyAuthorization(function (resolve, eventInfo) {
      var buttonId = config.wechat && config.wechat.agree_button_id;
      show({
        config: config,
        referrer: eventInfo && eventInfo.referrer,
        agree: function (choices) {
          return (choices ? choose(config, choices) : acceptAll(config)).then(function (made) {
            resolve({ event: "agree", buttonId: buttonId });
            return made;
          });
        },
        disagree: function () {
          return rejectAll(config).then(function (made) {
            resolve({ event: "disagree" });
            return made;
          });
        },
      });
    });
  }
  function requirePrivacyAuthorize() { return call("requirePrivacyAuthorize"); }

  return {
    loadConfig: loadConfig, needsChoice: needsChoice, getConsent: getConsent,
    acceptAll: acceptAll, rejectAll: rejectAll, choose: choose, withdraw: withdraw, flush: flush,
    setPreferences: setPreferences, sync: sync, syncIfStale: syncIfStale, getState: getState,
    identify: identify, privacySetting: privacySetting,
    onNeedPrivacyAuthorization: onNeedPrivacyAuthorization, requirePrivacyAuthorize: requirePrivacyAuthorize,
    subjectId: function () { return load().subject_id || null; },
  };
}

module.exports = { create: create, VERSION: VERSION };
