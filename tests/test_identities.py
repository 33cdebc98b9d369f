"""Identities: normalization, keyed hashes and identity tokens, with plain values."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.core.preference_model import PreferenceModel
from gateway.preferences.identities import (
    Identity,
    IdentityHasher,
    InvalidIdentity,
    from_json,
    from_query,
    looks_like_contact,
    normalize,
)
from gateway.preferences.tokens import IdentityTokens, InvalidToken

MODEL = PreferenceModel(identity_types=("loyalty_card",))
KEY = b"k" * 32
NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("email", "  Ann.Lee@Example.COM ", "ann.lee@example.com"),
        ("phone", "+49 30 1234567", "+49301234567"),
        ("phone", "0049 (30) 123-4567", "+49301234567"),
        ("phone", "+1 650-253-0000", "+16502530000"),
        ("customer_id", " C-00042 ", "C-00042"),
        ("wechat_openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("loyalty_card", "LC-9", "LC-9"),
    ],
)
def test_two_spellings_of_one_identity_normalize_alike(
    type_: str, value: str, expected: str
) -> None:
    assert normalize(MODEL, type_, value) == Identity(type_, expected)


@pytest.mark.parametrize(
    ("type_", "value", "field"),
    [
        ("fax", "123", "identity.type"),
        ("email", "not-an-address", "identity.value"),
        ("email", "a\x00b@example.com", "identity.value"),
        ("email", "", "identity.value"),
        ("email", "a@" + "b" * 300 + ".com", "identity.value"),
        ("phone", "030 1234567", "identity.value"),  # no country code: ambiguous
        ("phone", "+1 555", "identity.value"),  # too short for its country
        ("phone", "+abc", "identity.value"),
        ("customer_id", "two words", "identity.value"),
        ("wechat_unionid", "short", "identity.value"),
    ],
)
def test_malformed_identities_are_refused_naming_the_field(
    type_: str, value: str, field: str
) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalize(MODEL, type_, value)
    assert caught.value.status_code == 422 and caught.value.field == field


def test_json_and_query_forms() -> None:
    assert from_json(MODEL, {"type": "email", "value": "A@B.io"}) == Identity("email", "a@b.io")
    assert from_query(MODEL, "email:A@B.io") == Identity("email", "a@b.io")
    bad: object
    for bad in (None, [], {"type": 1, "value": "x"}, {"type": "email"}):
        with pytest.raises(InvalidIdentity):
            from_json(MODEL, bad, "identities[3]")
    with pytest.raises(InvalidIdentity) as caught:
        from_query(MODEL, "no-colon")
    assert caught.value.field == "identity"


def test_hashes_are_keyed_and_per_site() -> None:
    """Threat: a copy of the store reveals or links customers. Hashes need the key, and the
    same address in two sites gives two unrelated hashes."""
    ann = Identity("email", "ann@example.com")
    hasher = IdentityHasher(KEY)
    digest = hasher.digest("demo", ann)
    assert len(digest) == 64 and "ann" not in digest
    assert hasher.digest("demo", ann) == digest
    assert hasher.digest("other", ann) != digest
    assert IdentityHasher(b"x" * 32).digest("demo", ann) != digest
    assert hasher.digest("demo", Identity("customer_id", "ann@example.com")) != digest
    with pytest.raises(ValueError, match="32 bytes"):
        IdentityHasher(b"short")


def test_the_hash_is_standard_hmac_sha256_under_a_derived_key() -> None:
    """Another implementation (a CRM's batch job) can compute the same hashes."""
    derived = hmac.new(KEY, b"consent-gateway identity hash v1", hashlib.sha256).digest()
    expected = hmac.new(derived, b"demo\0email\0ann@example.com", hashlib.sha256).hexdigest()
    assert IdentityHasher(KEY).digest("demo", Identity("email", "ann@example.com")) == expected


PAIRS = [("email", "f" * 64)]


def test_a_token_verifies_for_its_site_until_it_expires() -> None:
    tokens = IdentityTokens(KEY)
    token = tokens.issue("demo", PAIRS, now=NOW, ttl=60)
    claims = tokens.verify(token, site="demo", now=NOW + 59)
    assert claims.identities == (("email", "f" * 64),) and claims.expires_at == NOW + 60
    assert "@" not in token  # hashes only: the token passes through the browser
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token, site="demo", now=NOW + 60)
    with pytest.raises(InvalidToken, match="another site"):
        tokens.verify(token, site="other", now=NOW)


def test_forged_tampered_and_foreign_tokens_are_refused() -> None:
    """Threat: a browser claims an identity it was not given."""
    tokens = IdentityTokens(KEY)
    token = tokens.issue("demo", PAIRS, now=NOW)
    payload, signature = token[4:].split(".")
    forged = IdentityTokens(b"y" * 32).issue("demo", PAIRS, now=NOW)
    for bad in (
        forged,
        f"it1.{payload}.{signature[::-1]}",
        f"it1.{payload[:-2]}xx.{signature}",
        "it1..",
        "",
        "v1.abc.def",
        "it1." + "a" * 5000,
        "it1.é.x",
    ):
        with pytest.raises(InvalidToken):
            tokens.verify(bad, site="demo", now=NOW)


def test_a_token_bound_to_a_subject_works_for_that_subject_only() -> None:
    tokens = IdentityTokens(KEY)
    token = tokens.issue("demo", PAIRS, now=NOW, subject_id="sub-a")
    assert tokens.verify(token, site="demo", now=NOW, subject_id="sub-a").subject_id == "sub-a"
    with pytest.raises(InvalidToken, match="another subject"):
        tokens.verify(token, site="demo", now=NOW, subject_id="sub-b")


def test_issue_limits() -> None:
    tokens = IdentityTokens(KEY)
    with pytest.raises(ValueError, match="ttl"):
        tokens.issue("demo", PAIRS, now=NOW, ttl=3601)
    with pytest.raises(ValueError, match="identities"):
        tokens.issue("demo", [], now=NOW)


@pytest.mark.parametrize(
    ("text", "contact"),
    [
        ("ann@example.com", True),
        ("+49 30 1234567", True),
        ("004930123456", True),
        ("3f0c9a1e-5b7d-4c2a-9e8f-1a2b3c4d5e6f", False),
        ("sub-ann", False),
        ("123456", False),
        ("user@host", False),
    ],
)
def test_subject_ids_that_are_contacts_are_recognised(text: str, contact: bool) -> None:
    assert looks_like_contact(text) is contact
