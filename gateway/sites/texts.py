"""The built-in banner texts: text key → English gettext msgid. Sites may override any msgid."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.core.model import ConsentModel

# Keys shared by every rule model. The msgids are the English source strings that translators
# see in the .po files; a site overrides one by setting `[texts] key = "…"` in site.toml.
BASE_TEXTS: Mapping[str, str] = {
    "title": "We value your privacy",
    "accept_all": "Accept all",
    "reject_all": "Reject all",
    "settings": "Customize",
    "save": "Save choices",
    "close": "Close",
    "ok": "OK",
    "preferences_title": "Privacy preferences",
    "preferences_intro": "Choose which purposes you allow. Strictly necessary ones are always on.",
    "always_on": "Always on",
    "do_not_sell": "Do Not Sell or Share My Personal Information",
    "limit_sensitive": "Limit the Use of My Sensitive Personal Information",
    "gpc_honoured": "Your Global Privacy Control signal was detected and honoured: we do not "
    "sell or share your personal information.",
    "privacy_policy": "Privacy policy",
    "separate_consent": "This purpose needs your separate consent.",
    "controller": "Data controller",
    "manage": "Privacy settings",
    "saved": "Your choices have been saved.",
    "withdraw": "Withdraw consent",
    # CCPA regs 11 CCR 7025(c)(6): shown on every page while GPC is honoured.
    "gpc_status": "Opt-out preference signal honoured",
    # PECR Sch. A1: beside a purpose that runs on an exemption until the visitor objects.
    "objection_note": "On unless you object.",
    # The first-layer description where a purpose runs on an objection-based exemption (UK).
    "objection_description": "We use cookies and similar technologies to run this site and to "
    "produce statistics that help us improve it. The statistics are on unless you object, which "
    "you can do here with “Reject all” or for each purpose. Anything else runs only with your "
    "consent, and you can change your mind at any time.",
}

# The first-layer description differs by consent model.
DESCRIPTIONS: Mapping[ConsentModel, str] = {
    "opt-in": "We use cookies and similar technologies to run this site and, with your "
    "consent, to measure its audience and personalise content and advertising. You can accept "
    "all, reject all or choose per purpose, and change your mind at any time.",
    "opt-out": "We use cookies and similar technologies for analytics and advertising, which "
    "may count as selling or sharing your personal information. You can opt out at any time.",
    "notice": "This site uses cookies and similar technologies. Essential ones keep it working; "
    "others help us understand and improve it.",
}


# The one-time-code e-mail of a rights request (gateway/rights/mailer.py), sent in the request's
# locale. The placeholders %(site)s, %(code)s and %(minutes)s must stay as they are.
EMAIL_TEXTS: Mapping[str, str] = {
    "email_subject": "%(site)s: your verification code %(code)s",
    "email_intro": "Someone (hopefully you) asked %(site)s for a copy, correction or deletion "
    "of the personal data linked to this address.",
    "email_code": "Your verification code: %(code)s",
    "email_expiry": "It expires in %(minutes)s minutes and works once. If you did not ask, "
    "ignore this message: nothing happens without the code.",
}


def source_texts(
    model: ConsentModel, overrides: Mapping[str, str], *, objection: bool = False
) -> dict[str, str]:
    """The msgids a banner of this model shows, with the site's overrides applied.

    ``objection``: some purpose runs before a choice on an exemption (UK): the description must
    say so, and that objecting is possible, rather than claim everything waits for consent.
    """
    texts = dict(BASE_TEXTS)
    texts["description"] = DESCRIPTIONS[model]
    texts.update(overrides)
    if objection and "description" not in overrides:
        texts["description"] = texts["objection_description"]
    return texts


def all_msgids() -> list[str]:
    """Every built-in msgid, for catalog extraction."""
    return [*BASE_TEXTS.values(), *DESCRIPTIONS.values(), *EMAIL_TEXTS.values()]
