"""The contactability decision, with plain values: every reason, and which state decides."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import BadRequest
from gateway.preferences.contactability import REASONS, Question, decide, question
from gateway.sinks.directory import ContactRow
from gateway.sites.sitefile import read_site
from tests.helpers import ROOT

MODEL = read_site(ROOT / "banners" / "demo").preferences
OFFERS = question(MODEL, "email", "offers", None)


def row(
    prefs: dict[str, Any] | None,
    line: str = "",
    at: str = "2026-12-06T10:00:00Z",
    subject: str = "s1",
) -> ContactRow:
    if prefs is None:
        return ContactRow("h", subject, None, None, None, None)
    return ContactRow("h", subject, line, prefs, at, at)


ON = {"channels": {"email": True}, "topics": {"offers": {"enabled": True, "frequency": "weekly"}}}


@pytest.mark.parametrize(
    ("rows", "contact", "reason"),
    [
        ([], False, "unknown_identity"),
        ([row(None)], False, "no_preferences"),
        ([row({"channels": {"email": False}})], False, "channel_off"),
        ([row({"channels": {"sms": True}})], False, "channel_not_chosen"),
        ([row({"channels": {"email": True}})], False, "topic_not_chosen"),
        (
            [row({"channels": {"email": True}, "topics": {"offers": {"enabled": False}}})],
            False,
            "topic_off",
        ),
        (
            [
                row(
                    {
                        "channels": {"email": True},
                        "topics": {"offers": {"enabled": True, "channels": {"email": False}}},
                    }
                )
            ],
            False,
            "topic_channel_off",
        ),
        ([row({"channels": "garbage", "topics": 3})], False, "channel_not_chosen"),
        ([row(ON)], True, "opted_in"),
    ],
)
def test_anything_short_of_a_clear_yes_is_a_no(
    rows: list[ContactRow], contact: bool, reason: str
) -> None:
    answer = decide(OFFERS, rows)
    assert (answer.contact, answer.reason) == (contact, reason)
    assert reason in REASONS


def test_a_yes_carries_the_frequency_or_the_topics_default() -> None:
    assert decide(OFFERS, [row(ON)]).frequency == "weekly"
    bare = {"channels": {"email": True}, "topics": {"offers": {"enabled": True}}}
    assert decide(OFFERS, [row(bare)]).frequency == MODEL.topic("offers").default_frequency  # type: ignore[union-attr]


def test_the_last_decision_across_devices_wins() -> None:
    off = {"channels": {"email": False}}
    assert not decide(
        OFFERS,
        [row(ON, at="2026-01-01T00:00:00Z"), row(off, at="2026-02-01T00:00:00Z", subject="s2")],
    ).contact
    assert decide(
        OFFERS,
        [row(ON, at="2026-03-01T00:00:00Z"), row(off, at="2026-02-01T00:00:00Z", subject="s2")],
    ).contact


def test_each_leaf_comes_from_the_device_that_set_it_last() -> None:
    """Threat: a change made on a second device (only the newsletter) hides the customer's
    e-mail choices made on the first, or an older opt-in there overrides a newer opt-out."""
    t1, t2, t3 = (f"2026-0{m}-01T00:00:00.000000Z|r{m}" for m in (1, 2, 3))
    laptop = ContactRow(
        "h", "laptop", "", ON, t1.split("|")[0], "r1",
        {"channels/email": t1, "topics/offers/enabled": t1, "topics/offers/frequency": t1},
    )  # fmt: skip
    phone = ContactRow(
        "h", "phone", "", {"channels": {}, "topics": {"newsletter": {"enabled": True}}},
        t2.split("|")[0], "r2", {"topics/newsletter/enabled": t2},
    )  # fmt: skip
    answer = decide(OFFERS, [laptop, phone])
    assert (answer.contact, answer.reason, answer.frequency) == (True, "opted_in", "weekly")
    assert answer.updated_at == t2.split("|")[0]
    # Unsubscribed from offers' e-mails on the phone later: that leaf is newer there.
    phone_off = phone._replace(
        preferences={"topics": {"offers": {"channels": {"email": False}}}},
        stamps={"topics/offers/channels/email": t3},
        updated_at=t3.split("|")[0],
    )
    assert decide(OFFERS, [laptop, phone_off]).reason == "topic_channel_off"
    # An older opt-in on a row changed later for something else does not beat a newer no.
    laptop_newer_row = laptop._replace(updated_at="2026-04-01T00:00:00.000000Z")
    assert decide(OFFERS, [laptop_newer_row, phone_off]).reason == "topic_channel_off"


def test_a_product_lines_own_state_beats_the_site_wide_one() -> None:
    q = question(MODEL, "email", "offers", "shop")
    off = {"channels": {"email": False}}
    rows = [row(ON, "shop", at="2026-01-01T00:00:00Z"), row(off, at="2026-05-01T00:00:00Z")]
    assert decide(q, rows).contact


def test_a_topic_not_sent_on_the_channel_is_a_no_for_everyone() -> None:
    q = question(MODEL, "wechat", "newsletter", None)
    assert decide(q, [row(ON)]).reason == "channel_not_offered"


@pytest.mark.parametrize(
    ("channel", "topic", "line", "code"),
    [
        ("fax", "offers", None, "unknown_channel"),
        (3, "offers", None, "unknown_channel"),
        ("email", "spam", None, "unknown_topic"),
        ("email", None, None, "unknown_topic"),
        ("email", "offers", "garden", "unknown_product_line"),
        ("email", "offers", 7, "unknown_product_line"),
    ],
)
def test_questions_the_site_cannot_answer_are_422(
    channel: Any, topic: Any, line: Any, code: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        question(MODEL, channel, topic, line)
    assert (caught.value.status_code, caught.value.code) == (422, code)


def test_questions_are_plain_values() -> None:
    assert isinstance(OFFERS, Question) and OFFERS.product_line == ""
