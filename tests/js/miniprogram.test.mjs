// The mini-program SDK (static/miniprogram/consent-gateway.js) against a real gateway, with a
// stand-in `wx` object: storage in a Map, wx.request over fetch, the privacy-authorization calls
// as the platform makes them. Run by tests/test_miniprogram_sdk.py, which starts the gateway and
// passes GATEWAY_URL and API_KEY; `node --test` runs each test in order.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { webcrypto } from "node:crypto";

const require = createRequire(import.meta.url);
const ConsentGateway = require("../../static/miniprogram/consent-gateway.js");
const GATEWAY = process.env.GATEWAY_URL;
const API_KEY = process.env.API_KEY;
const SITE = "demo";
const CONTRACT = "《Consent Gateway 演示小程序隐私保护指引》";

// A stand-in for the platform: what a mini-program's `wx` offers, over the network for real.
function standIn({ needAuthorization = true, contract = CONTRACT, offline = false } = {}) {
  const storage = new Map();
  const wx = {
    storage, requests: [], offline, listener: null, answers: [],
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ""),
    setStorageSync: (k, v) => { storage.set(k, v); },
    getRandomValues({ length, success }) {
      success({ randomValues: webcrypto.getRandomValues(new Uint8Array(length)).buffer });
    },
    request({ url, method = "GET", data, header = {}, success, fail }) {
      wx.requests.push({ url, method, data, header });
      if (wx.offline) return setTimeout(() => fail({ errMsg: "request:fail timeout" }), 1);
      fetch(url, { method, headers: header, body: data === undefined ? undefined : JSON.stringify(data) })
        .then(async (r) => {
          const text = await r.text();
          let body = text;
          try { body = JSON.parse(text); } catch { /* not JSON */ }
          const headers = {};
          r.headers.forEach((v, k) => { headers[k] = v; });
          success({ statusCode: r.status, data: body, header: headers });
        })
        .catch((e) => fail({ errMsg: "request:fail " + e.message }));
    },
    getPrivacySetting({ success }) {
      success({ needAuthorization: wx.needAuthorization, privacyContractName: contract });
    },
    needAuthorization,
    onNeedPrivacyAuthorization(listener) { wx.listener = listener; },
    // As the platform does: a privacy API (or this call) while authorization is needed asks
    // the mini-program's listener, and goes on once it resolves.
    requirePrivacyAuthorize({ success, fail }) {
      if (!wx.needAuthorization) return success({});
      wx.listener((answer) => {
        wx.answers.push(answer);
        if (answer.event === "agree") { wx.needAuthorization = false; success({}); }
        else fail({ errMsg: "requirePrivacyAuthorize:fail privacy permission is not authorized" });
      }, { referrer: "pages/index/index" });
    },
  };
  return wx;
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const r = await fetch(GATEWAY + path, {
    method, headers: { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

// The subject's history as the gateway's store holds it, once `count` records have arrived.
async function history(subject, secret, count) {
  for (let tries = 0; tries < 100; tries++) {
    const r = await api(`/v1/sites/${SITE}/subjects/${subject}/consents`, { headers: { Authorization: "Subject " + secret } });
    if (r.status === 200 && r.body.history.length >= count) return r.body;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error("the store did not get the records");
}

const stored = (wx) => JSON.parse(wx.storage.get("consent_gateway:" + SITE));

test("the config arrives in the mini-program's language, then revalidates with its ETag", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, lang: "zh-CN", region: "CN" });
  const config = await cg.loadConfig();
  assert.equal(config.language, "zh-Hans");
  assert.equal(config.rule.id, "pipl");
  assert.equal(config.wechat.privacy_contract_name, CONTRACT);
  assert.equal(cg.needsChoice(config), true);
  const again = await cg.loadConfig();
  assert.deepEqual(again, config);
  assert.ok(wx.requests[1].header["If-None-Match"], "the second fetch is conditional");
});

test("the platform's privacy prompt records the choice made in the app's own popup", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, lang: "zh-CN", region: "CN" });
  const config = await cg.loadConfig();
  const setting = await cg.privacySetting(config);
  assert.deepEqual(setting, { needAuthorization: true, privacyContractName: CONTRACT, matchesConfig: true });
  let shown = null;
  cg.onNeedPrivacyAuthorization(config, (prompt) => {
    shown = prompt;
    // The user taps the agree button after choosing analytics only (marketing needs a separate
    // consent under PIPL and stays off).
    prompt.agree({ analytics: true, marketing: false, personalization: false });
  });
  await cg.requirePrivacyAuthorize();
  assert.equal(shown.referrer, "pages/index/index");
  assert.deepEqual(wx.answers, [{ event: "agree", buttonId: config.wechat.agree_button_id }]);
  const mine = stored(wx);
  assert.match(mine.secret, /^[0-9a-f]{32}$/);
  assert.match(mine.subject_id, /^[0-9a-f]{32}$/);
  assert.notEqual(mine.subject_id, mine.secret);
  const h = await history(mine.subject_id, mine.secret, 1);
  const record = h.history[0];
  assert.equal(record.channel, "miniprogram");
  assert.equal(record.action, "custom");
  assert.deepEqual(record.choices, { necessary: true, analytics: true, marketing: false, personalization: false });
  assert.equal(cg.needsChoice(config), false);
  // The secret went only in the body and in the subject's own Authorization header.
  for (const r of wx.requests) assert.ok(!r.url.includes(mine.secret));
  // The subject id alone opens nothing.
  const without = await api(`/v1/sites/${SITE}/subjects/${mine.subject_id}/consents`);
  assert.equal(without.status, 403);
});

test("a refusal is recorded too, and the platform is told", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, region: "CN" });
  const config = await cg.loadConfig();
  cg.onNeedPrivacyAuthorization(config, (prompt) => prompt.disagree());
  await assert.rejects(cg.requirePrivacyAuthorize());
  assert.deepEqual(wx.answers, [{ event: "disagree" }]);
  const mine = stored(wx);
  const h = await history(mine.subject_id, mine.secret, 1);
  assert.equal(h.history[0].action, "reject_all");
});

test("a change made elsewhere (the privacy center) reaches the app when it syncs", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, region: "DE" });
  const config = await cg.loadConfig();
  await cg.acceptAll(config);
  const mine = stored(wx);
  await history(mine.subject_id, mine.secret, 1);
  // Fresh and the same revision: no request at all.
  const before = wx.requests.length;
  assert.equal((await cg.syncIfStale(config)).action, "accept_all");
  assert.equal(wx.requests.length, before);
  // The customer withdraws in the privacy center, which holds the same subject's secret.
  const made = await api(`/v1/sites/${SITE}/consents`, {
    method: "POST",
    body: {
      subject_secret: mine.secret, banner_version: config.banner_version, action: "withdraw",
      choices: { analytics: false, marketing: false, personalization: false }, channel: "web",
    },
  });
  assert.equal(made.status, 201);
  await history(mine.subject_id, mine.secret, 2);
  const synced = await cg.sync();
  assert.equal(synced.action, "withdraw");
  assert.deepEqual(synced.choices, { necessary: true, analytics: false, marketing: false, personalization: false });
  assert.equal(cg.getConsent().action, "withdraw");
});

test("offline, a choice waits in storage and is sent once when back", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, region: "DE" });
  const config = await cg.loadConfig();
  wx.offline = true;
  assert.deepEqual(await cg.rejectAll(config), { queued: true });
  assert.equal(cg.getConsent().action, "reject_all");
  assert.deepEqual(cg.getConsent().choices, { necessary: true, analytics: false, marketing: false, personalization: false });
  assert.equal(stored(wx).queue.length, 1);
  assert.deepEqual(await cg.loadConfig(), config); // the last config known
  wx.offline = false;
  await cg.flush();
  await cg.flush(); // nothing left: no second record
  const mine = stored(wx);
  assert.equal(mine.queue.length, 0);
  // Each send is counted: the one after the failure says it is a retry, so a node that did not
  // take the first looks for it in the store (recording/store_retries.py).
  const posts = wx.requests.filter((r) => r.method === "POST" && r.url.endsWith("/consents"));
  assert.deepEqual(posts.map((r) => r.data.attempt), [1, 2]);
  const h = await history(mine.subject_id, mine.secret, 1);
  assert.equal(h.history.length, 1);
  assert.equal(h.history[0].action, "reject_all");
});

test("a customer who logs in on a second device gets their choices from the first", async () => {
  const first = standIn();
  const a = ConsentGateway.create({ wx: first, gateway: GATEWAY, site: SITE, region: "DE" });
  const config = await a.loadConfig();
  await a.choose(config, { analytics: true, marketing: false, personalization: true });
  const mine = stored(first);
  await history(mine.subject_id, mine.secret, 1);
  // The app's backend (API key) links the subject to the customer and issues a token.
  const key = { Authorization: "Bearer " + API_KEY };
  const email = `mp-${Date.now()}@example.com`;
  const linked = await api(`/v1/sites/${SITE}/subjects/${mine.subject_id}/identities`, {
    method: "POST", headers: key, body: { type: "email", value: email },
  });
  assert.equal(linked.status, 201);
  const token = await api(`/v1/sites/${SITE}/identity-tokens`, {
    method: "POST", headers: key, body: { identities: [{ type: "email", value: email }] },
  });
  assert.equal(token.status, 201);

  const second = standIn();
  const b = ConsentGateway.create({ wx: second, gateway: GATEWAY, site: SITE, region: "DE" });
  const answer = await b.identify(token.body.token);
  assert.deepEqual(answer.identities, ["email"]);
  assert.notEqual(stored(second).subject_id, mine.subject_id); // its own subject, linked
  assert.deepEqual(b.getConsent().choices, { necessary: true, analytics: true, marketing: false, personalization: true });
  // A token works once.
  await assert.rejects(b.identify(token.body.token), (e) => e.status === 403);
});

test("contact preferences are recorded with the subject's secret", async () => {
  const wx = standIn();
  const cg = ConsentGateway.create({ wx, gateway: GATEWAY, site: SITE, region: "DE" });
  const config = await cg.loadConfig();
  await cg.acceptAll(config);
  const made = await cg.setPreferences(
    { channels: { wechat: true, sms: false }, topics: { offers: { enabled: true, frequency: "monthly" } } },
    { product_line: "shop" },
  );
  assert.ok(made.receipt);
  const sent = wx.requests.find((r) => r.url.endsWith("/preferences"));
  assert.equal(sent.data.channel, "miniprogram");
  const mine = stored(wx);
  for (let tries = 0; tries < 100; tries++) {
    const state = await cg.getState().catch(() => null);
    if (state && state.preferences && state.preferences.shop) {
      assert.equal(state.preferences.shop.channels.wechat, true);
      assert.equal(state.preferences.shop.topics.offers.frequency, "monthly");
      assert.equal(state.preference_history[0].channel, "miniprogram");
      return;
    }
    await new Promise((done) => setTimeout(done, 100));
  }
  assert.fail("the preferences did not reach the subject's state: " + mine.subject_id);
});
