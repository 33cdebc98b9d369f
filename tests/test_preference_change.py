"""Preference changes checked against the demo's model and merged into a state: plain values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.errors import BadRequest
from gateway.core.preference_change import apply, validate
from gateway.sites.sitefile import read_site
from tests.helpers import ROOT

MODEL = read_site(ROOT / "banners" / "demo").preferences


def test_a_change_in_the_architecture_shape_is_accepted_as_given() -> None:
    change = {
        "channels": {"email": True, "sms": False},
        "topics": {
            "offers": {"enabled": True, "frequency": "weekly", "channels": {"sms": False}},
            "product_updates": {"enabled": True, "frequency": None},
        },
    }
    assert validate(MODEL, change, "shop") == change


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ([], "invalid_preferences", "preferences"),
        ({}, "invalid_preferences", "preferences"),
        ({"channels": {}}, "invalid_preferences", "preferences"),
        ({"colour": 1}, "invalid_preferences", "preferences.colour"),
        ({"channels": {"fax": True}}, "unknown_channel", "preferences.channels.fax"),
        ({"channels": {"email": "yes"}}, "invalid_preferences", "preferences.channels.email"),
        ({"channels": ["email"]}, "invalid_preferences", "preferences.channels"),
        ({"topics": {"spam": {"enabled": True}}}, "unknown_topic", "preferences.topics.spam"),
        ({"topics": {"offers": True}}, "invalid_preferences", "preferences.topics.offers"),
        (
            {"topics": {"offers": {"enabled": 1}}},
            "invalid_preferences",
            "preferences.topics.offers.enabled",
        ),
        (
            {"topics": {"offers": {"frequency": "hourly"}}},
            "unknown_frequency",
            "preferences.topics.offers.frequency",
        ),
        (
            {"topics": {"product_updates": {"frequency": "weekly"}}},
            "unknown_frequency",
            "preferences.topics.product_updates.frequency",
        ),
        (
            {"topics": {"newsletter": {"channels": {"sms": True}}}},
            "unknown_channel",
            "preferences.topics.newsletter.channels.sms",
        ),
        (
            {"topics": {"offers": {"mood": "happy"}}},
            "invalid_preferences",
            "preferences.topics.offers.mood",
        ),
    ],
)
def test_mistakes_are_422_naming_the_field(data: Any, code: str, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate(MODEL, data)
    assert (caught.value.status_code, caught.value.code, caught.value.field) == (422, code, field)


def test_product_lines_scope_topics() -> None:
    topics = tuple(
        dataclasses.replace(t, product_lines=("shop",)) if t.id == "offers" else t
        for t in MODEL.topics
    )
    scoped = dataclasses.replace(MODEL, topics=topics)
    change = {"topics": {"offers": {"enabled": True}}}
    assert validate(scoped, change, "shop") == change
    with pytest.raises(BadRequest) as caught:
        validate(scoped, change, "insurance")
    assert caught.value.code == "topic_not_in_product_line"
    with pytest.raises(BadRequest) as caught:
        validate(scoped, change, "garden")
    assert caught.value.code == "unknown_product_line"


def test_apply_merges_key_by_key() -> None:
    current: dict[str, Any] = {
        "channels": {"email": True, "sms": True},
        "topics": {
            "offers": {"enabled": True, "frequency": "daily"},
            "newsletter": {"enabled": True},
        },
    }
    # One-click unsubscribe from the offers e-mails: nothing else moves.
    after = apply(current, {"topics": {"offers": {"channels": {"email": False}}}})
    assert after == {
        "channels": {"email": True, "sms": True},
        "topics": {
            "offers": {"enabled": True, "frequency": "daily", "channels": {"email": False}},
            "newsletter": {"enabled": True},
        },
    }
    assert current["topics"]["offers"] == {"enabled": True, "frequency": "daily"}  # not mutated
    assert apply(None, {"channels": {"sms": False}}) == {"channels": {"sms": False}, "topics": {}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    data=json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "channels": st.dictionaries(st.sampled_from(["email", "sms", "fax"]), json_values),
            "topics": st.dictionaries(
                st.sampled_from(["offers", "newsletter", "spam"]), json_values
            ),
        },
    )
)
def test_any_input_is_a_valid_change_or_a_422(data: Any) -> None:
    """Hostile input: never an exception other than the 422, and what passes is canonical."""
    try:
        change = validate(MODEL, data)
    except BadRequest as exc:
        refused = exc
    else:
        assert validate(MODEL, change) == change
        apply(None, change)
        return
    assert refused.status_code == 422 and refused.field.startswith("preferences")
