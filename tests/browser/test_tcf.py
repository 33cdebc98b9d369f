"""IAB TCF and GPP in Chromium: a vendor script reads the TC data through __tcfapi after accept and
after reject, a US page reads usnat with GPC through __gpp, a frame on another origin reaches
__tcfapi by postMessage; the strings are decoded here with the gateway's Python codecs."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from gateway.sites.gvl_store import import_gvl
from gateway.standards import gpp, tcf
from tests.browser.harness import NONCE, Gateway, run_gateway
from tests.browser.servers import LoopbackServer
from tests.browser.test_banner import BANNER, action, cdn_headers, recorded, stored
from tests.iab_site import CMP_ID, GVL_FILE, TCF_TOML

pytestmark = pytest.mark.browser

# A vendor's tag: registers with __tcfapi as soon as the page runs it (the stub queues the call
# until the CMP has loaded) and keeps every TC data it is given.
VENDOR_TAG = """<script nonce="{nonce}">
window.tcEvents = [];
__tcfapi("addEventListener", 2, function (tcData, ok) {{
  if (ok) window.tcEvents.push(JSON.parse(JSON.stringify(tcData)));
}});
</script>"""
GPP_TAG = """<script nonce="{nonce}">
window.gppEvents = [];
__gpp("addEventListener", function (evt, ok) {{
  if (ok) window.gppEvents.push(JSON.parse(JSON.stringify(evt)));
}});
</script>"""
# A frame on another origin: finds the __tcfapiLocator frame up the tree and calls through it.
FRAME = """<!doctype html><title>vendor frame</title><script>
window.results = [];
function call(command) {
  var id = "c" + Math.random(), f = window, target = null;
  while (!target) {
    try { if (f.frames["__tcfapiLocator"]) target = f; } catch (e) {}
    if (f === window.top) break;
    f = f.parent;
  }
  window.addEventListener("message", function (e) {
    var d = typeof e.data === "string" ? JSON.parse(e.data) : e.data;
    var r = d && d.__tcfapiReturn;
    if (r && r.callId === id) window.results.push(r);
  });
  target.postMessage({__tcfapiCall: {command: command, version: 2, callId: id}}, "*");
}
call("ping");
</script>"""


def _prepare(banners: Path) -> None:
    toml = banners / "demo" / "site.toml"
    # Visitors of these tests are located by CDN headers the test adds (DE, US-CA).
    toml.write_text(toml.read_text(encoding="utf-8") + TCF_TOML, encoding="utf-8")
    import_gvl(banners, GVL_FILE)


@pytest.fixture(scope="module")
def tcf_gateway(
    site: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with run_gateway(site.origin, tmp_path_factory.mktemp("tcf"), prepare=_prepare) as gw:
        yield gw


@pytest.fixture(scope="module")
def other_origin() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.page("/vendor-frame.html", FRAME)
    yield server
    server.close()


def _page(site: LoopbackServer, gateway: Gateway, path: str, tags: str, body: str = "") -> str:
    """A publisher page: consent.js loaded synchronously (so __tcfapi exists for the tags)."""
    csp = f"script-src 'nonce-{NONCE}' 'unsafe-eval'; frame-src *; object-src 'none'"
    src = html.escape(f"{gateway.origin}/v1/sites/demo/consent.js")
    content = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>TCF</title>
<script nonce="{NONCE}" src="{src}"></script>{tags.format(nonce=NONCE)}</head>
<body><main><h1>News</h1><p>Article.</p>{body}</main></body></html>"""
    return site.page(path, content, {"Content-Security-Policy": csp})


def _open(page: Page, gateway: Gateway, url: str, region: str, gpc: bool = False) -> None:
    added = cdn_headers(region) | ({"sec-gpc": "1"} if gpc else {})

    def through_cdn(route: Route) -> None:
        route.continue_(headers={**route.request.headers, **added})

    page.route(gateway.origin + "/**", through_cdn)
    page.goto(url)


def _tc_events(page: Page, status: str) -> list[dict[str, Any]]:
    page.wait_for_function(f"window.tcEvents.some(e => e.eventStatus === {status!r} && e.tcString)")
    events: list[dict[str, Any]] = page.evaluate("window.tcEvents")
    return [e for e in events if e["eventStatus"] == status]


def test_vendor_gets_tc_data_after_accept(
    page: Page, site: LoopbackServer, tcf_gateway: Gateway
) -> None:
    _open(page, tcf_gateway, _page(site, tcf_gateway, "/tcf-accept", VENDOR_TAG), "DE")
    expect(page.locator(BANNER)).to_be_visible()
    # The first layer TCF requires: the vendor count, the stacks, legitimate interest.
    layer = page.locator("#cg-host [data-cg-tcf]")
    expect(layer).to_contain_text("We and our 3 partners")
    expect(layer).to_contain_text("Advertising based on limited data and advertising measurement")
    expect(layer).to_contain_text("right to object")
    page.wait_for_function("window.tcEvents.some(e => e.eventStatus === 'cmpuishown')")

    action(page, "accept_all")
    consent = recorded(page)
    event = _tc_events(page, "useractioncomplete")[-1]
    model = tcf.decode(event["tcString"])
    assert model.cmp_id == CMP_ID and model.vendor_list_version == 130
    assert model.purpose_consents == (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert model.purpose_legitimate_interests == (2, 7, 9, 10)
    assert model.vendor_consents == (28, 755, 793)
    assert model.vendors_disclosed == (28, 755, 793)
    assert model.special_feature_optins == (1,)
    assert event["gdprApplies"] is True and event["cmpId"] == CMP_ID
    assert event["purpose"]["consents"]["1"] is True
    assert event["vendor"]["consents"] == {"28": True, "755": True, "793": True}
    assert event["publisher"]["restrictions"] == {"2": {"755": 1}}
    # The record the gateway keeps carries the very string the vendor got.
    record = stored(tcf_gateway, consent)[-1]
    assert record["signals"]["tc_string"] == event["tcString"]
    assert gpp.decode(record["signals"]["gpp_string"])["tcfeuv2"]["PurposeConsents"][0] is True

    # The next page reads the stored string at once: tcloaded, same string, no banner.
    page.reload()
    page.wait_for_function("window.tcEvents.some(e => e.eventStatus === 'tcloaded' && e.tcString)")
    again = page.evaluate("window.tcEvents.filter(e => e.eventStatus === 'tcloaded')[0]")
    assert again["tcString"] == event["tcString"]

    # Without its own memory, tcf.js takes the strings from the last record's answer.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "iab-strings" in r.url else None)
    page.evaluate("localStorage.removeItem('cg_iab')")
    page.reload()
    page.wait_for_function("window.tcEvents.some(e => e.eventStatus === 'tcloaded' && e.tcString)")
    kept = page.evaluate("window.tcEvents.filter(e => e.eventStatus === 'tcloaded')[0]")
    assert kept["tcString"] == event["tcString"] and asked == []

    # Strings issued for another vendor list version are issued afresh, without a banner.
    page.evaluate(
        "(() => { const s = JSON.parse(localStorage.cg_iab); s.vlv = 129;"
        " localStorage.cg_iab = JSON.stringify(s);"
        " const r = JSON.parse(localStorage.cg_receipt); delete r.tc_string; delete r.gpp_string;"
        " localStorage.cg_receipt = JSON.stringify(r); })()"
    )
    with page.expect_request(lambda r: r.url.endswith("/iab-strings")) as refresh:
        page.reload()
    assert refresh.value.method == "POST"
    page.wait_for_function("window.tcEvents.some(e => e.eventStatus === 'tcloaded' && e.tcString)")
    fresh = page.evaluate("window.tcEvents.filter(e => e.eventStatus === 'tcloaded')[0]")
    assert tcf.decode(fresh["tcString"]).purpose_consents == model.purpose_consents
    expect(page.locator(BANNER)).to_be_hidden()


def test_vendor_gets_tc_data_after_reject(
    page: Page, site: LoopbackServer, tcf_gateway: Gateway
) -> None:
    _open(page, tcf_gateway, _page(site, tcf_gateway, "/tcf-reject", VENDOR_TAG), "DE")
    expect(page.locator(BANNER)).to_be_visible()
    action(page, "reject_all")
    recorded(page)
    event = _tc_events(page, "useractioncomplete")[-1]
    model = tcf.decode(event["tcString"])
    assert model.cmp_id == CMP_ID
    assert model.purpose_consents == () and model.purpose_legitimate_interests == ()
    assert model.vendor_consents == () and model.vendor_legitimate_interests == ()
    assert model.vendors_disclosed == (28, 755, 793)  # disclosed, refused
    assert event["purpose"]["consents"]["1"] is False
    assert not any(event["vendor"]["consents"].values())
    # removeEventListener stops the calls.
    removed = page.evaluate(
        "new Promise(r => __tcfapi('removeEventListener', 2, (ok) => r(ok), "
        "window.tcEvents[0].listenerId))"
    )
    assert removed is True


def test_us_page_gets_usnat_with_gpc_through_gpp(
    page: Page, site: LoopbackServer, tcf_gateway: Gateway
) -> None:
    page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    _open(page, tcf_gateway, _page(site, tcf_gateway, "/gpp-us", GPP_TAG), "US-CA", gpc=True)
    # GPC is applied without a banner, recorded, and the string issued for that record.
    consent = recorded(page)
    assert consent["action"] == "gpc"
    # __gpp answers synchronously: poll until the string issued for the record is in.
    page.wait_for_function(
        "(() => { let p; __gpp('ping', (v) => { p = v; }); return p.signalStatus === 'ready'"
        " && p.parsedSections.usnat && p.parsedSections.usnat.Gpc === true; })()",
        timeout=15000,  # a record and the strings' round trip; slow only when the machine is
    )
    ping = page.evaluate("new Promise(r => __gpp('ping', (p) => r(p)))")
    assert ping["cmpId"] == CMP_ID and ping["applicableSections"] == [7]
    decoded = gpp.decode(ping["gppString"])
    assert decoded["header"]["SectionIds"] == [7]
    usnat = decoded["usnat"]
    assert usnat["Gpc"] is True and usnat["GpcSegmentIncluded"] is True
    assert usnat["SaleOptOut"] == 1 and usnat["SharingOptOut"] == 1
    assert usnat["TargetedAdvertisingOptOut"] == 1
    assert page.evaluate("new Promise(r => __gpp('hasSection', (v) => r(v), 'usnat'))") is True
    assert page.evaluate("new Promise(r => __gpp('hasSection', (v) => r(v), 'tcfeuv2'))") is False
    section = page.evaluate("new Promise(r => __gpp('getSection', (v) => r(v), 'usnat'))")
    assert section["Gpc"] is True
    assert page.evaluate("new Promise(r => __gpp('getField', (v) => r(v), 'usnat.Gpc'))") is True
    events = page.evaluate("window.gppEvents.map(e => e.eventName)")
    assert events[0] == "listenerRegistered" and "signalStatus" in events
    record = stored(tcf_gateway, consent)[-1]
    assert record["signals"]["gpp_string"] == ping["gppString"]
    # No TCF outside the regions it applies to: __tcfapi answers, gdprApplies false.
    assert page.evaluate("new Promise(r => __tcfapi('ping', 2, (p) => r(p.gdprApplies)))") is False


def test_frame_on_another_origin_reaches_tcfapi(
    page: Page, site: LoopbackServer, tcf_gateway: Gateway, other_origin: LoopbackServer
) -> None:
    frame = f'<iframe title="vendor" src="{other_origin.origin}/vendor-frame.html"></iframe>'
    _open(page, tcf_gateway, _page(site, tcf_gateway, "/tcf-frame", "", frame), "DE")
    vendor = page.frame_locator("iframe[title=vendor]")
    expect(vendor.locator("title")).to_have_count(1)
    child = next(f for f in page.frames if f.url.startswith(other_origin.origin))
    child.wait_for_function("window.results.length > 0")
    ping = child.evaluate("window.results[0]")
    assert ping["success"] is True
    assert ping["returnValue"]["cmpId"] == CMP_ID
    assert ping["returnValue"]["gdprApplies"] is True
    action(page, "accept_all")
    recorded(page)
    child.evaluate("call('getTCData')")
    child.wait_for_function("window.results.length > 1 && window.results[1].returnValue.tcString")
    data = child.evaluate("window.results[1].returnValue")
    assert tcf.decode(data["tcString"]).purpose_consents[0] == 1
