"""What the rights service takes in: a new request and how its requester is verified, the
protocols of its collaborators on the same layer, its clock and time format.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.errors import BadRequest, NotFound
from gateway.rights.policy import SiteRights
from gateway.sites.texts import EMAIL_TEXTS

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class RecordReader(Protocol):
    """What the service reads of the recording side (the web layer adapts RecordingService)."""

    async def history(self, site: str, subject_id: str) -> dict[str, Any]: ...

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None: ...

    def settled_before(self, moment: dt.datetime) -> bool:
        """Whether every record appended before ``moment`` has reached the store."""

    async def record_choice(
        self, site_id: str, subject_id: str, kind: str, region: Mapping[str, Any], key: str
    ) -> str | None:
        """Record ``kind`` ("withdraw", "opt_out_sale") for the subject; the record id."""


class StateReader(Protocol):
    """A subject's preferences and identity types (the preferences service)."""

    async def state_of(self, site: str, subject_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Verification:
    """How the requester was (or will be) verified."""

    method: str  # "receipt", "email", "api_key"
    actor: str  # for the transition log: "subject", "api_key:<id>"
    subject_ids: tuple[str, ...] = ()
    identity_type: str | None = None
    identity_hash: str | None = None
    email: str | None = None  # only to send the code; never stored


@dataclass(frozen=True)
class NewRequest:
    site: str
    site_name: str
    rights: SiteRights
    rule_id: str
    region: Mapping[str, Any]
    type: str
    verification: Verification
    details: Mapping[str, Any]
    language: str
    # The code e-mail's words (EMAIL_TEXTS translated into the request's locale), its BCP 47
    # language and text direction.
    mail_texts: Mapping[str, str] = field(default_factory=lambda: dict(EMAIL_TEXTS))
    mail_language: str = "en"
    mail_direction: str = "ltr"


class RequestError(BadRequest):
    pass


def unknown_request() -> NotFound:
    # One answer for an unknown request and a wrong token: request ids are not enumerable.
    return NotFound("unknown_request", "no request with this id and token")
