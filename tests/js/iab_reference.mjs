// Runs IAB's reference libraries for the codec tests: reads a JSON array of requests on stdin,
// writes a JSON array of answers ({ok: value} or {error: message}) on stdout.
//   {op: "tcf_encode", model}  model: TCModel-named JSON (tests/test_standards_reference.py)
//   {op: "tcf_decode", string}
//   {op: "gpp_encode", sections: {name: {Field: value}}}
//   {op: "gpp_decode", string}
//   {op: "tcf_decode_us" | "gpp_decode_us", string, n}: microseconds per decode
import { GVL, PurposeRestriction, TCModel, TCString } from '@iabtechlabtcf/core';
import { GppModel, RangeEntry } from '@iabgpp/cmpapi';

const VECTORS = ['specialFeatureOptins', 'purposeConsents', 'purposeLegitimateInterests',
  'vendorConsents', 'vendorLegitimateInterests', 'vendorsDisclosed', 'vendorsAllowed',
  'publisherConsents', 'publisherLegitimateInterests', 'publisherCustomConsents',
  'publisherCustomLegitimateInterests'];
const SCALARS = ['version', 'cmpId', 'cmpVersion', 'consentScreen', 'consentLanguage',
  'vendorListVersion', 'policyVersion', 'isServiceSpecific', 'useNonStandardTexts',
  'purposeOneTreatment', 'publisherCountryCode', 'numCustomPurposes'];

// A vendor list in which every vendor id the model uses exists and declares purposes 1-11 on
// consent and 2-11 on legitimate interest, flexibly, so the library's GVL filters keep every id
// and publisher restriction the test sets (purpose 1 cannot be flexible under the Policies).
function vendorList(model) {
  const all = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  let maxId = 1;
  for (const name of VECTORS.filter((n) => n.startsWith('vendor'))) {
    for (const id of model[name] || []) maxId = Math.max(maxId, id);
  }
  for (const r of model.publisherRestrictions || []) {
    for (const id of r.vendorIds) maxId = Math.max(maxId, id);
  }
  const vendors = {};
  for (let id = 1; id <= maxId; id++) {
    vendors[id] = { id, name: `v${id}`, purposes: all, legIntPurposes: all.slice(1),
      flexiblePurposes: all.slice(1), specialPurposes: [], features: [], specialFeatures: [],
      policyUrl: 'https://example.invalid/', cookieMaxAgeSeconds: 0, usesCookies: false,
      cookieRefresh: false, usesNonCookieAccess: false };
  }
  const purposes = {};
  for (let id = 1; id <= 11; id++) purposes[id] = { id, name: `p${id}`, description: '' };
  return { gvlSpecificationVersion: 3, vendorListVersion: model.vendorListVersion,
    tcfPolicyVersion: model.policyVersion ?? 5, lastUpdated: '2025-01-01T00:00:00Z',
    purposes, specialPurposes: {}, features: {}, specialFeatures: {}, stacks: {},
    dataCategories: {}, vendors };
}

function tcfEncode(model) {
  const gvl = new GVL(vendorList(model), { language: (model.consentLanguage || 'EN').toLowerCase() });
  const tc = new TCModel(gvl);
  for (const name of SCALARS) {
    if (name in model && name !== 'vendorListVersion' && name !== 'policyVersion') tc[name] = model[name];
  }
  for (const name of VECTORS) tc[name].set(model[name] || []);
  for (const r of model.publisherRestrictions || []) {
    const restriction = new PurposeRestriction(r.purposeId, r.restrictionType);
    for (const id of r.vendorIds) tc.publisherRestrictions.add(id, restriction);
  }
  tc.created = new Date(model.created);
  tc.lastUpdated = new Date(model.lastUpdated);
  return TCString.encode(tc);
}

function ids(vector) {
  const out = [];
  vector.forEach((on, id) => { if (on) out.push(id); });
  return out;
}

function tcfDecode(string) {
  const tc = TCString.decode(string);
  const out = {};
  for (const name of SCALARS) out[name] = tc[name];
  for (const name of VECTORS) out[name] = ids(tc[name]);
  out.created = tc.created.toISOString();
  out.lastUpdated = tc.lastUpdated.toISOString();
  out.publisherRestrictions = tc.publisherRestrictions.getRestrictions().map((r) => ({
    purposeId: r.purposeId, restrictionType: r.restrictionType,
    vendorIds: tc.publisherRestrictions.getVendors(r) }));
  return out;
}

function gppEncode(sections) {
  const model = new GppModel();
  for (const [section, fields] of Object.entries(sections)) {
    // tcfeuv2 stamps Created/LastUpdated with today on every other change: set them last.
    const dated = ['Created', 'LastUpdated'];
    for (const [field, value] of Object.entries(fields)) {
      if (field === 'PublisherRestrictions') {
        model.setFieldValue(section, field, value.map((r) => new RangeEntry(r.key, r.type, r.ids)));
      } else if (!dated.includes(field)) {
        model.setFieldValue(section, field, value);
      }
    }
    for (const field of dated) {
      if (field in fields) model.setFieldValue(section, field, new Date(fields[field]));
    }
  }
  return model.encode();
}

function gppDecode(string) {
  const model = new GppModel(string);
  return { header: model.getHeader(), ...JSON.parse(JSON.stringify(model.toObject())) };
}

// Microseconds per call of fn, over n calls after a warm-up (bench/standards.py).
function timed(fn, n) {
  for (let i = 0; i < Math.min(n, 200); i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1000 / n;
}

const OPS = {
  tcf_decode_us: (r) => timed(() => TCString.decode(r.string), r.n),
  gpp_decode_us: (r) => timed(() => new GppModel(r.string).toObject(), r.n),
  tcf_encode: (r) => tcfEncode(r.model),
  tcf_decode: (r) => tcfDecode(r.string),
  gpp_encode: (r) => gppEncode(r.sections),
  gpp_decode: (r) => gppDecode(r.string),
};

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const answers = JSON.parse(input).map((request) => {
    try {
      return { ok: OPS[request.op](request) };
    } catch (e) {
      return { error: String(e && e.message ? e.message : e) };
    }
  });
  process.stdout.write(JSON.stringify(answers));
});
