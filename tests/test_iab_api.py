"""TCF and GPP through the real app: the config's iab block and consent.js only where they apply,
tcf.js, strings issued with each record or checked when an app sends its own, the refresh
endpoint, and hostile input (threat named in each docstring)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.model import Region
from gateway.serving.gateway import snippet_document
from gateway.standards import gpp, issuing, tcf
from gateway.standards.tcf_model import TCModel
from tests.helpers import make_settings
from tests.iab_site import CMP_ID, tcf_settings
from tests.pg import consent_body, secret_of

PEER = ("127.0.0.1", 50000)  # the trusted loopback proxy: CDN geo headers count
DE = {"CF-IPCountry": "DE"}
CA = {"CF-IPCountry": "US", "cf-region-code": "CA"}
URL = "/v1/sites/demo/consents"
STRINGS = "/v1/sites/demo/iab-strings"
CONTRADICTS = "tc_string_contradicts_choice"
CUSTOM = {"analytics": True, "marketing": False, "personalization": False}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = tcf_settings(tmp_path, subject_writes_per_minute=0, client_writes_per_minute=0)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", client=PEER) as c:
        yield c


def _bundle(client: TestClient) -> Any:
    return client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]


def _depth(client: TestClient) -> int:
    depth: int = client.app.state.recording.outbox.depth  # type: ignore[attr-defined]
    return depth


def _post(client: TestClient, subject: str, headers: dict[str, str], **extra: Any) -> Any:
    body = consent_body(_bundle(client), subject, "custom", **extra)
    body["choices"] = dict(CUSTOM)
    return client.post(
        URL, content=orjson.dumps(body), headers={**headers, "Content-Type": "text/plain"}
    )


def _expected(client: TestClient, region: Region, rule: str, gpc: bool = False) -> issuing.Issued:
    bundle = _bundle(client)
    applies = issuing.applicable(bundle.site, bundle.gvl, rule, region)
    choices = {"necessary": True, **CUSTOM}
    fresh = issuing.Issuer(bundle.site, bundle.gvl)  # computed anew, not the app's cache
    return fresh.issue(applies, choices, gpc, "en", time.time_ns() // 100_000_000)


def _model(client: TestClient) -> TCModel:
    text = _expected(client, Region("DE"), "gdpr").tc_string
    assert text is not None
    return tcf.decode(text)


def test_a_site_without_tcf_serves_the_same_snippet_and_config(tmp_path: Path) -> None:
    """consent.js for a non-TCF site is byte for byte the snippet with its config: no IAB code."""
    with TestClient(
        create_app(make_settings(tmp_path)), base_url="http://127.0.0.1:8000", client=PEER
    ) as c:
        for headers in (DE, CA):
            js = c.get("/v1/sites/demo/consent.js", headers=headers).content
            gateway = c.app.state.gateway  # type: ignore[attr-defined]
            bundle = gateway.catalog.get("demo")
            visitor = gateway.visitor_from(
                bundle,
                None,
                Region(headers["CF-IPCountry"], headers.get("cf-region-code"), "header"),
                Headers(),
                {},
            )
            record_url = gateway.record_url("http", "127.0.0.1:8000", "demo")
            plain = gateway.snippet.assemble(
                snippet_document(gateway.resolve(bundle, visitor), visitor, record_url)
            )
            assert len(js) == len(plain) and js == plain
            assert b"__tcfapi" not in js and b'"iab"' not in js
            assert "iab" not in c.get("/v1/sites/demo/config", headers=headers).json()
        assert c.get("/v1/sites/demo/tcf.js").status_code == 404


def test_config_and_snippet_carry_iab_only_where_it_applies(client: TestClient) -> None:
    de = client.get("/v1/sites/demo/config", headers=DE).json()["iab"]
    assert de["tcf"] is True and de["cmp_id"] == CMP_ID and de["vendor_list_version"] == 130
    assert de["gpp"]["sections"] == ["tcfeuv2"] and de["gpp"]["string"] == ""
    assert de["script"].startswith("/v1/sites/demo/tcf.js?lang=en&v=")
    us = client.get("/v1/sites/demo/config", headers=CA).json()["iab"]
    assert us["tcf"] is False and us["gpp"]["sections"] == ["usnat"]
    assert gpp.decode(us["gpp"]["string"])["usnat"]["SaleOptOut"] == 2  # no choice, no GPC
    gpc = client.get("/v1/sites/demo/config", headers={**CA, "Sec-GPC": "1"}).json()["iab"]
    usnat = gpp.decode(gpc["gpp"]["string"])["usnat"]
    assert usnat["Gpc"] is True and usnat["SaleOptOut"] == 1
    assert "iab" not in client.get("/v1/sites/demo/config", headers={"CF-IPCountry": "JP"}).json()
    js = client.get("/v1/sites/demo/consent.js", headers=DE).content
    assert b'stub("__tcfapi"' in js and b'stub("__gpp"' in js and b"Locator" in js
    jp = client.get("/v1/sites/demo/consent.js", headers={"CF-IPCountry": "JP"}).content
    assert b"__tcfapi" not in jp


def test_tcf_js_is_localized_cacheable_and_bounded(client: TestClient) -> None:
    """Threat: a hostile lang parameter; an unknown site."""
    script = client.get("/v1/sites/demo/config", headers=DE).json()["iab"]["script"]
    r = client.get(script)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "public, max-age=86400"
    assert b"We and our 3 partners" in r.content and b"__CG_TCF__" not in r.content
    assert client.get(script, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert (
        client.get("/v1/sites/demo/tcf.js?lang=de").headers["cache-control"]
        != "public, max-age=86400"
    )
    assert client.get("/v1/sites/demo/tcf.js?lang=" + "x" * 100).status_code == 400
    assert client.get("/v1/sites/nope/tcf.js").json()["error"] == "unknown_site"


def test_a_record_gets_the_strings_its_choice_gives(client: TestClient) -> None:
    r = _post(client, "issued", DE)
    assert r.status_code == 201, r.text
    body = r.json()
    model = tcf.decode(body["tc_string"])
    assert model.cmp_id == CMP_ID and model.purpose_consents == (1, 8, 9)
    assert model.purpose_legitimate_interests == (9, 10)
    assert body["iab"]["tcf"]["purposeConsents"] == [1, 8, 9]
    assert gpp.decode(body["gpp_string"])["header"]["SectionIds"] == [2]
    deadline = time.monotonic() + 10
    while _depth(client):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    history = client.get(
        f"/v1/sites/demo/subjects/{body['subject_id']}/consents",
        headers={"Authorization": f"Subject {secret_of('issued')}"},
    ).json()
    assert history["current"]["signals"]["tc_string"] == body["tc_string"]
    assert history["current"]["signals"]["gpp_string"] == body["gpp_string"]
    # A US visitor's record carries usnat only; a Japanese visitor's none.
    us = _post(client, "us", CA).json()
    assert "tc_string" not in us and gpp.decode(us["gpp_string"])["usnat"]["SaleOptOut"] == 1
    assert "gpp_string" not in _post(client, "jp", {"CF-IPCountry": "JP"}).json()


def test_an_apps_strings_are_kept_when_they_match_the_choice(client: TestClient) -> None:
    issued = _expected(client, Region("DE"), "gdpr")
    r = _post(client, "app", DE, tc_string=issued.tc_string, gpp_string=issued.gpp_string)
    assert r.status_code == 201, r.text
    assert r.json()["tc_string"] == issued.tc_string and "iab" not in r.json()


def _encoded(model: TCModel, **changes: Any) -> str:
    return tcf.encode(dataclasses.replace(model, **changes))


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"purpose_consents": (8, 9)}, CONTRADICTS, "tc_string.purposeConsents"),
        ({"purpose_consents": (1, 2, 8, 9)}, CONTRADICTS, "tc_string.purposeConsents"),
        ({"purpose_legitimate_interests": (2, 9, 10)}, CONTRADICTS,
         "tc_string.purposeLegitimateInterests"),
        ({"special_feature_optins": (1,)}, CONTRADICTS, "tc_string.specialFeatureOptins"),
        ({"cmp_id": 301}, "tc_string_cmp_mismatch", "tc_string.cmpId"),
        ({"vendor_list_version": 131}, "tc_string_unknown_vendor_list",
         "tc_string.vendorListVersion"),
        ({"vendor_consents": (28, 999)}, "tc_string_unknown_vendor", "tc_string.vendorConsents"),
    ],
)  # fmt: skip
def test_an_apps_tc_string_that_contradicts_the_choice_is_refused(
    client: TestClient, changes: dict[str, Any], error: str, field: str
) -> None:
    """Threat: an app or script recording a TC string that claims more than the visitor gave."""
    before = _depth(client)
    r = _post(client, "liar", DE, tc_string=_encoded(_model(client), **changes))
    assert r.status_code == 422, r.text
    assert (r.json()["error"], r.json()["field"]) == (error, field)
    assert _depth(client) == before


@pytest.mark.parametrize(
    ("headers", "extra", "status", "error"),
    [
        (DE, {"tc_string": "not a tc string"}, 422, "malformed_tc_string"),
        (DE, {"tc_string": "CQ"}, 422, "malformed_tc_string"),
        (DE, {"tc_string": 123}, 400, "invalid_field"),
        (DE, {"tc_string": "C" * 9000}, 400, "invalid_field"),
        (DE, {"gpp_string": "DBABMA~CQ"}, 422, "malformed_gpp_string"),
        (CA, {"gpp_string": None, "tc_string": "USE_DE"}, 422, "tc_string_not_expected"),
        (CA, {"gpp_string": "USE_DE"}, 422, "gpp_section_not_expected"),
        (CA, {"gpp_string": "NO_OPT_OUT"}, 422, "gpp_string_contradicts_choice"),
        ({"CF-IPCountry": "JP"}, {"tc_string": "USE_DE"}, 422, "tc_string_not_expected"),
    ],
)
def test_malformed_or_misplaced_strings_get_precise_errors(
    client: TestClient, headers: dict[str, str], extra: dict[str, Any], status: int, error: str
) -> None:
    """Threat: garbage, oversized or foreign strings in a record; nothing partial is stored."""
    de = _expected(client, Region("DE"), "gdpr")
    us = _expected(client, Region("US", "CA"), "ccpa")
    assert us.gpp_data is not None
    not_out = gpp.encode({"usnat": {**us.gpp_data["usnat"], "SaleOptOut": 2, "SharingOptOut": 2}})
    swap = {
        "USE_DE": de.tc_string if "tc_string" in extra else de.gpp_string,
        "NO_OPT_OUT": not_out,
    }
    body = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in extra.items()}
    before = _depth(client)
    r = _post(client, "hostile", headers, **body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert _depth(client) == before


def test_the_refresh_endpoint_issues_the_same_strings(client: TestClient) -> None:
    r = client.post(
        STRINGS,
        content=orjson.dumps({"choices": CUSTOM}),
        headers={**DE, "Content-Type": "text/plain"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["tc_string"] == _expected(client, Region("DE"), "gdpr").tc_string
    assert _depth(client) == 0  # nothing is recorded
    gpc = client.post(STRINGS, json={"choices": CUSTOM, "gpc": True}, headers=CA).json()
    assert gpp.decode(gpc["gpp_string"])["usnat"]["Gpc"] is True


@pytest.mark.parametrize(
    ("site", "body", "headers", "status", "error"),
    [
        ("demo", b"{", DE, 400, "invalid_json"),
        ("demo", b'{"choices": {"analytics": true}}', DE, 400, "missing_choice"),
        ("demo", b'{"choices": {"analytics": true, "marketing": false, "personalization": false,'
         b' "x": true}}', DE, 422, "unknown_purpose"),
        ("demo", b'{"choices": [1]}', DE, 400, "invalid_field"),
        ("demo", b'{"choices": {"analytics": true, "marketing": false, "personalization": false},'
         b' "gpc": "yes"}', DE, 400, "invalid_field"),
        ("demo", b'{"choices": {"analytics": true, "marketing": false, "personalization": false}}',
         {"CF-IPCountry": "JP"}, 422, "iab_not_applicable"),
        ("demo", b"x" * 20000, DE, 413, "body_too_large"),
        ("demo", b"{}", {**DE, "Origin": "https://evil.example"}, 403, "origin_not_allowed"),
        ("nope", b"{}", DE, 404, "unknown_site"),
    ],
)  # fmt: skip
def test_the_refresh_endpoint_refuses_hostile_input(
    client: TestClient, site: str, body: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    """Threat: malformed, oversized or cross-site requests to the unauthenticated refresh."""
    r = client.post(
        f"/v1/sites/{site}/iab-strings",
        content=body,
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
