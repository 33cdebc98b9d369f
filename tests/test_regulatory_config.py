"""What the config tells the snippet about each rule (issue 11), served end to end.

Each test names the provision its expectation encodes; W1-W16 are the items of the
December 2026 regulatory review of the rule table (issue 11).
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

CONFIG = "/v1/sites/demo/config"
G, D = "granted", "denied"


def config(client: TestClient, region: str, *, gpc: bool = False, **params: str) -> Any:
    headers = {"Sec-GPC": "1"} if gpc else {}
    r = client.get(CONFIG, params={"region": region, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def purposes(body: Any) -> dict[str, Any]:
    return {p["id"]: p for p in body["purposes"]}


@pytest.mark.parametrize(
    ("region", "age"),
    [
        # GDPR Art. 8(1) with each state's derogation (W5): served per country.
        ("DK", 13),
        ("FR", 15),
        ("ES", 14),
        ("DE", 16),
        ("RE", 15),  # French outermost region: the French figure
        ("AX", 13),  # Åland: the Finnish figure
        ("GB", 13),  # DPA 2018 s. 9
        ("US-CA", 16),  # Cal. Civ. Code 1798.120(c)
        ("CH", None),
    ],
)
def test_the_national_age_of_consent_is_served(client: TestClient, region: str, age: int) -> None:
    assert config(client, region)["age_of_consent"] == age


def test_uk_statistics_run_only_for_a_purpose_that_qualifies_by_fact(client: TestClient) -> None:
    """PECR Sch. A1 para 5 with the ICO's processor test (W2-W4): the demo's analytics declares
    the facts, so it runs before a choice, objection-based; nothing else is granted."""
    body = config(client, "GB")
    rule = body["rule"]
    assert rule["objection_based"] is True
    assert rule["gpc_objects"] is True  # W16: GPC is an objection here
    analytics = purposes(body)["analytics"]
    assert (analytics["exempt"], analytics["default"], analytics["refusal_persists"]) == (
        True,
        True,
        True,
    )
    assert purposes(body)["personalization"]["exempt"] is False
    defaults = body["consent_mode"]["default"]
    assert defaults["analytics_storage"] == G
    assert (defaults["ad_storage"], defaults["personalization_storage"]) == (D, D)


def test_uk_gpc_is_an_objection_to_the_exempt_statistics(client: TestClient) -> None:
    body = config(client, "GB", gpc=True)
    assert body["gpc_applied"] is True
    assert purposes(body)["analytics"]["default"] is False
    assert body["consent_mode"]["default"]["analytics_storage"] == D


def test_opt_out_purposes_say_a_refusal_persists(client: TestClient) -> None:
    """Cal. Civ. Code 1798.120(d), 1798.135(c)(4) (W1): what is on before a choice keeps a
    refusal until the consumer opts back in; re-asking is allowed after 12 calendar months."""
    body = config(client, "US-CA")
    by_id = purposes(body)
    assert all(by_id[p]["refusal_persists"] for p in ("analytics", "marketing", "personalization"))
    assert by_id["necessary"]["refusal_persists"] is False
    assert body["rule"]["reprompt_after_refusal_months"] == 12
    assert body["rule"]["reprompt_months"] == 13
    # Opt-in rules need no such flag: nothing optional is on before consent.
    assert not any(p["refusal_persists"] for p in config(client, "DE")["purposes"])


def test_a_gpc_visitor_is_never_defaulted_into_advertising(client: TestClient) -> None:
    """11 CCR 7025 and the state UOOM rules (W1): with GPC the ad types stay denied."""
    for region in ("US-CA", "US-CO", "US-TX", "US-UT", "US"):
        defaults = config(client, region, gpc=True)["consent_mode"]["default"]
        assert {defaults[t] for t in ("ad_storage", "ad_user_data", "ad_personalization")} == {D}


def test_switzerland_keeps_advertising_opt_in(client: TestClient) -> None:
    """revFADP Art. 6(7), FDPIC guidance of 22 Jan 2025, Google's consent policy for CH (W8)."""
    body = config(client, "CH")
    assert body["rule"]["opt_in_types"] == ["ad_storage", "ad_user_data", "ad_personalization"]
    assert purposes(body)["marketing"]["default"] is False
    assert purposes(body)["analytics"]["default"] is True  # TCA Art. 45c: opt-out
    defaults = body["consent_mode"]["default"]
    assert (defaults["ad_storage"], defaults["analytics_storage"]) == (D, G)


@pytest.mark.parametrize(
    ("region", "kind"),
    [
        ("CN", "third_party"),  # PIPL Art. 23
        ("KR", "third_party"),  # PIPA Art. 17
        ("JP", "third_party"),  # APPI Art. 27
    ],
)
def test_separate_consents_are_marked_for_their_own_act(
    client: TestClient, region: str, kind: str
) -> None:
    assert purposes(config(client, region))["marketing"]["separate"] == kind
    assert purposes(config(client, "DE"))["marketing"]["separate"] is None


@pytest.mark.parametrize(
    ("region", "age", "prohibited"),
    [
        ("US-MD", "17", "minor:sale"),  # Md. Com. Law 14-4607(a)(4)-(5)
        ("US-CT", "17", "minor:sale"),  # Conn. Gen. Stat. 42-529a (SB 1295)
        ("US-OR", "15", "minor:sale"),  # ORS 646A.578 (HB 2008)
        ("BR", "16", "minor:targeted_ads"),  # Lei 15.211/2025 (ECA Digital)
        ("IN", "17", "minor:targeted_ads"),  # DPDP s. 9(3)
        ("US-MD", "18", None),
        ("US-CA", "15", None),  # CCPA: opt-in under 16, not a ban
    ],
)
def test_the_sites_age_signal_makes_banned_processing_unavailable(
    client: TestClient, region: str, age: str, prohibited: str | None
) -> None:
    body = config(client, region, age=age)
    marketing = purposes(body)["marketing"]
    assert marketing["prohibited"] == prohibited
    assert body["minor"] is (prohibited is not None)
    if prohibited:
        assert marketing["default"] is False
        defaults = body["consent_mode"]["default"]
        assert {defaults[t] for t in ("ad_storage", "ad_user_data", "ad_personalization")} == {D}


def test_india_bans_tracking_a_child(client: TestClient) -> None:
    by_id = purposes(config(client, "IN", age="12"))
    assert by_id["analytics"]["prohibited"] == "minor:tracking"  # DPDP s. 9(3)
    assert by_id["necessary"]["prohibited"] is None


@pytest.mark.parametrize("age", ["abc", "-1", "131", "1e2", "15 ", "015"])
def test_a_malformed_age_signal_is_a_precise_400(client: TestClient, age: str) -> None:
    r = client.get(CONFIG, params={"region": "US-MD", "age": age})
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_parameter",
        "detail": "age: expected the visitor's age in whole years, 0 to 130",
        "field": "age",
    }


def test_prohibited_rules_are_in_the_rule(client: TestClient) -> None:
    rule = config(client, "US-MD")["rule"]
    assert rule["prohibited"] == ["sale_of_sensitive"]  # Md. Com. Law 14-4607(a)(2)
    assert (rule["minor_age"], rule["minor_prohibited"]) == (18, ["sale", "targeted_ads"])
    assert config(client, "US-OR")["rule"]["prohibited"] == ["sale_of_precise_location"]
    assert config(client, "US-VA")["rule"]["prohibited"] == ["sale_of_precise_location"]


def test_wechat_mini_programs_get_their_fields(client: TestClient) -> None:
    wechat = config(client, "CN")["wechat"]
    assert wechat["privacy_contract_name"].startswith("《")
    assert wechat["agree_button_id"] == "cg-agree-privacy"
    assert wechat["apis"] == {}
    # The inline snippet config leaves the mini-program block out.
    r = client.get("/v1/sites/demo/consent.js", params={"region": "CN"})
    assert b"cg-agree-privacy" not in r.content
