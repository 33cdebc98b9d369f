"""The rights service: takes requests, verifies subjects, fulfils the gateway's part, tracks
downstream systems and deadlines. Its collaborators come in through small protocols (the
preferences and recording services sit on the same layer and are not imported).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.core.errors import BadRequest, ConfigError, NotFound, Unavailable
from gateway.core.settings import Settings
from gateway.rights import credentials, events, kinds
from gateway.rights.deadlines import Period, add
from gateway.rights.export import build_zip
from gateway.rights.mailer import SmtpTarget, code_message, parse_smtp_url, send
from gateway.rights.policy import DownstreamSystem, SiteRights
from gateway.sinks import directory_for
from gateway.sinks.directory import Directory
from gateway.sinks.rights import Erasure, RightsStore, StoredRequest, SystemPart, Transition
from gateway.sinks.rights_postgres import PostgresRights
from gateway.sinks.rights_sqlite import SqliteRights
from gateway.sinks.sqlite import FILE_NAME
from gateway.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger("gateway.rights")

RIGHTS_SECRET = "rights_key"  # noqa: S105 (the name of a stored secret, not one)
CODES_PER_IDENTITY_PER_HOUR = 3
CALLBACK_SKEW = 300  # seconds a downstream confirmation's timestamp may be off
MAX_LIST = 500
MAX_OPEN = 100_000  # open requests are thousands at most: the periodic work sees all
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def store_for(settings: Settings) -> RightsStore:
    url = settings.store_url.strip()
    if not url:
        return SqliteRights(settings.data_dir / FILE_NAME)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresRights(url)
    raise ConfigError("GATEWAY_STORE_URL must be empty or a postgresql:// URL")


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


class RequestError(BadRequest):
    pass


def _unknown() -> NotFound:
    # One answer for an unknown request and a wrong token: request ids are not enumerable.
    return NotFound("unknown_request", "no request with this id and token")


class RightsService:
    """Start it in the app's lifespan after the recording and preferences services."""

    def __init__(
        self,
        settings: Settings,
        store: RightsStore | None = None,
        *,
        directory: Directory | None = None,
        clock: Clock = utc_now,
        registry: CollectorRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or store_for(settings)
        # A directory handed in (the preferences service's) is opened and closed by its owner.
        self._own_directory = directory is None
        self.directory = directory or directory_for(settings)
        self.clock = clock
        self.env = os.environ if env is None else env
        self.records: RecordReader | None = None
        self.states: StateReader | None = None
        # The site's rights settings by site id (the app's catalog); for the periodic work.
        self.rights_for: Callable[[str], SiteRights | None] = lambda site: None
        self._key: bytes | None = None
        self._smtp: SmtpTarget | None = (
            parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self.m_created = Counter(
            "gateway_rights_requests_total", "Rights requests received.", ["site", "type"],
            registry=self.metrics_registry,
        )  # fmt: skip
        self.m_overdue = Gauge(
            "gateway_rights_requests_overdue", "Open rights requests past their due date.",
            ["site"], registry=self.metrics_registry,
        )  # fmt: skip
        self.m_open = Gauge(
            "gateway_rights_requests_open", "Open rights requests.", ["site"],
            registry=self.metrics_registry,
        )  # fmt: skip
        self.m_reminders = Counter(
            "gateway_rights_system_reminders_total",
            "Reminders sent because a downstream system had not confirmed in time.",
            ["site", "system", "kind"], registry=self.metrics_registry,
        )  # fmt: skip
        self.m_failed_codes = Counter(
            "gateway_rights_code_failures_total", "Wrong, expired or exhausted codes.",
            ["reason"], registry=self.metrics_registry,
        )  # fmt: skip
        self.m_mail_errors = Counter(
            "gateway_rights_mail_errors_total", "Code e-mails the SMTP server did not take.",
            registry=self.metrics_registry,
        )  # fmt: skip

    # -- lifetime ------------------------------------------------------------------------

    async def start(self, *, interval: float = 30.0) -> None:
        await self.store.open()
        if self._own_directory:
            await self.directory.open()
        self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        if interval > 0:
            self._loop = asyncio.create_task(self._periodic(interval))

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        if self._own_directory:
            await self.directory.close()
        await self.store.close()

    async def _periodic(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # a store outage: try again next time, never stop the loop
                log.exception("rights: periodic work failed")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background work (code e-mails, fulfilment) started so far (tests, stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def key(self) -> bytes:
        """The deployment's rights key (codes, links), shared by every node through the store."""
        if self._key is None:
            try:
                text = await self.directory.deployment_secret(
                    RIGHTS_SECRET, lambda: secrets.token_hex(32)
                )
            except Exception as exc:
                raise Unavailable("the central store is unreachable", retry_after=5) from exc
            self._key = text.encode("ascii")
        return self._key

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except BadRequest:
            raise
        except Exception as exc:
            log.warning("rights store call failed: %s", exc)
            raise Unavailable("the central store is unreachable", retry_after=5) from exc

    # -- taking a request ---------------------------------------------------------------

    async def create(self, new: NewRequest) -> tuple[StoredRequest, str]:
        """Store the request; (the request, its token). The same answer whether or not the
        identity or subject is known."""
        policy = new.rights.policy(new.rule_id)
        if new.type not in policy.types:
            raise RequestError(
                "type_not_offered",
                f"{new.type!r} is not a right under the rule for this region; offered: "
                f"{', '.join(policy.types)}",
                field="type",
                status_code=422,
            )
        now = self.clock()
        deadline = policy.deadline_for(new.type)
        token, token_hash = credentials.new_token()
        v = new.verification
        request = StoredRequest(
            request_id=str(uuid.uuid4()),
            site=new.site,
            type=new.type,
            state=kinds.RECEIVED,
            rule_id=policy.template,
            region=dict(new.region),
            verification=v.method,
            subject_ids=v.subject_ids,
            identity_type=v.identity_type,
            identity_hash=v.identity_hash,
            token_hash=token_hash,
            code_hash=None,
            code_expires_at=None,
            code_attempts=0,
            details=dict(new.details),
            language=new.language,
            received_at=fmt(now),
            due_at=fmt(add(now, deadline.period)),
            updated_at=fmt(now),
        )
        parts = [
            SystemPart(request.request_id, s.name, s.required, "pending")
            for s in new.rights.systems
        ]
        created = events.event(events.CREATED, request.received_at, request, parts)
        transition = Transition(request.request_id, None, kinds.RECEIVED, v.actor, "", fmt(now))
        await self._call(self.store.create(request, transition, parts, [created]))
        self.m_created.labels(new.site, new.type).inc()
        if v.method == "email":
            request = await self._start_code(request, new, now)
        else:
            request = await self._verified(request, v.subject_ids, v.actor)
        return request, token

    async def _start_code(
        self, request: StoredRequest, new: NewRequest, now: dt.datetime
    ) -> StoredRequest:
        key = await self.key()
        code = credentials.new_code()
        expires = int(now.timestamp()) + credentials.CODE_TTL
        changes = {
            "state": kinds.VERIFYING,
            "code_hash": credentials.code_hash(key, request.request_id, code),
            "code_expires_at": expires,
            "updated_at": fmt(now),
        }
        t = Transition(request.request_id, kinds.RECEIVED, kinds.VERIFYING, "system", "", fmt(now))
        await self._call(self.store.update(request.request_id, kinds.RECEIVED, changes, t, []))
        since = fmt(now - dt.timedelta(hours=1))
        recent = await self._call(
            self.store.recent_by_identity(request.site, request.identity_hash or "", since)
        )
        email = new.verification.email
        if email and recent <= CODES_PER_IDENTITY_PER_HOUR:
            # Sent in the background: the answer takes the same time whether the address is
            # a customer's or not, and whether the relay is fast or slow.
            self._spawn(self._mail(email, new.site_name, code))
        else:
            log.warning("rights: code e-mail suppressed (more than %d requests for one "
                        "identity within an hour)", CODES_PER_IDENTITY_PER_HOUR)  # fmt: skip
        return replace(request, **changes)  # type: ignore[arg-type]

    async def _mail(self, to: str, site_name: str, code: str) -> None:
        if self._smtp is None:
            log.error("rights: GATEWAY_SMTP_URL is empty; a verification code was not sent")
            self.m_mail_errors.inc()
            return
        message = code_message(
            self.settings.smtp_from, to, site_name, code, credentials.CODE_TTL // 60
        )
        try:
            await send(self._smtp, message)
        except Exception as exc:
            self.m_mail_errors.inc()
            log.error("rights: the SMTP server did not take a code e-mail: %s", exc)

    async def _verified(
        self, request: StoredRequest, subject_ids: Sequence[str], actor: str
    ) -> StoredRequest:
        now = fmt(self.clock())
        changes = {
            "state": kinds.IN_PROGRESS,
            "subject_ids": tuple(dict.fromkeys(subject_ids)),
            "code_hash": None,
            "updated_at": now,
        }
        after = replace(request, **changes)  # type: ignore[arg-type]
        parts = await self._call(self.store.systems(request.request_id))
        change = events.event(events.UPDATED, now, after, parts, change="verified")
        t = Transition(request.request_id, request.state, kinds.IN_PROGRESS, actor, "", now)
        if not await self._call(
            self.store.update(request.request_id, request.state, changes, t, [change])
        ):
            raise RequestError(
                "conflict", "the request changed meanwhile; try again", status_code=409
            )
        try:
            return await self._fulfil(after)
        except Exception as exc:  # the request is taken; the periodic work tries again
            log.warning(
                "rights: the gateway's part of %s failed for now: %s", request.request_id, exc
            )
            return after

    # -- verification -------------------------------------------------------------------

    async def authorized(self, request_id: str, token: str) -> StoredRequest:
        """The request when ``token`` is its token; one 404 for unknown id or wrong token."""
        try:
            uuid.UUID(request_id)
        except ValueError:
            raise _unknown() from None
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        stored = request.token_hash if request else "0" * 64
        if not credentials.token_matches(token, stored) or request is None:
            raise _unknown()
        return request

    async def verify(self, request_id: str, token: str, code: str) -> StoredRequest:
        request = await self.authorized(request_id, token)
        if request.state != kinds.VERIFYING:
            if request.state == kinds.DENIED:
                raise RequestError("request_closed", "this request was closed", status_code=409)
            raise RequestError("already_verified", "this request is verified", status_code=409)
        now = self.clock()
        if request.code_attempts >= credentials.MAX_ATTEMPTS:
            self.m_failed_codes.labels("exhausted").inc()
            await self._deny(request, "too many wrong codes", "system")
            raise RequestError("too_many_attempts", "too many wrong codes; make a new request",
                               status_code=429)  # fmt: skip
        if request.code_expires_at is None or now.timestamp() >= request.code_expires_at:
            self.m_failed_codes.labels("expired").inc()
            await self._deny(request, "the verification code expired", "system")
            raise RequestError("code_expired", "the code expired; make a new request",
                               status_code=410)  # fmt: skip
        key = await self.key()
        if not credentials.code_matches(key, request_id, code, request.code_hash or ""):
            attempts = await self._call(self.store.count_attempt(request_id))
            self.m_failed_codes.labels("wrong").inc()
            left = max(credentials.MAX_ATTEMPTS - attempts, 0)
            if left == 0:
                await self._deny(request, "too many wrong codes", "system")
                raise RequestError("too_many_attempts", "too many wrong codes; make a new request",
                                   status_code=429)  # fmt: skip
            raise RequestError(
                "invalid_code", f"wrong code; {left} attempt(s) left", field="code", status_code=403
            )
        subjects: list[str] = await self._call(
            self.directory.subjects_for(request.site, request.identity_hash or "")
        )
        return await self._verified(request, subjects, "subject")

    # -- the gateway's own part ---------------------------------------------------------

    async def _fulfil(self, request: StoredRequest) -> StoredRequest:
        """Do what the gateway itself can do for the request; retried by ``tick`` if it
        cannot yet (e.g. deletion while the subject's records are still in the outbox)."""
        if request.gateway_done_at is not None or not kinds.is_open(request.state):
            return request
        now = self.clock()
        result: dict[str, Any]
        if request.type == "deletion":
            if self.records is not None and not self.records.settled_before(
                parse_time(request.received_at)
            ):
                return request  # erase once every earlier record has reached the store
            erased: Erasure = await self._call(
                self.store.erase(request.site, request.subject_ids, request.request_id, fmt(now))
            )
            result = {
                "erased_records": erased.records,
                "erased_identity_links": erased.identity_links,
                "erased_preference_extras": erased.preference_states,
            }
        elif request.type == "correction":
            result = await self._correct(request, now)
        elif request.type in kinds.EXPORT_TYPES:
            result = {"export": "ready"}
        elif request.type in ("withdraw", "opt_out_sale") and self.records is not None:
            # A consent record on the subject's behalf: the banner, the snippet and every
            # system reading consents see it, and the history shows who asked (channel api).
            recorded = [
                await self.records.record_choice(
                    request.site, subject, request.type, request.region,
                    f"rights-{request.request_id}-{index}",
                )
                for index, subject in enumerate(request.subject_ids)
            ]  # fmt: skip
            result = {"recorded": [r for r in recorded if r]}
        else:
            # objection, restriction: the gateway holds no processing of its own to stop;
            # the event tells every downstream system, which confirm.
            result = {"announced": True}
        changes = {"gateway_done_at": fmt(now), "result": result, "updated_at": fmt(now)}
        after = replace(request, **changes)  # type: ignore[arg-type]
        parts = await self._call(self.store.systems(request.request_id))
        change = events.event(events.UPDATED, fmt(now), after, parts, change="gateway_done")
        if not await self._call(
            self.store.update(request.request_id, request.state, changes, None, [change])
        ):
            return request
        return await self._maybe_complete(after, parts)

    async def _correct(self, request: StoredRequest, now: dt.datetime) -> dict[str, Any]:
        details = request.details
        unlink = [str(h) for h in details.get("unlink_hashes", [])]
        link = [(str(t), str(h)) for t, h in details.get("link_hashes", [])]
        await self._call(
            self.store.relink(request.site, request.subject_ids, unlink, link, fmt(now))
        )
        return {"unlinked": len(unlink), "linked": len(link)}

    async def _maybe_complete(
        self, request: StoredRequest, parts: Sequence[SystemPart]
    ) -> StoredRequest:
        pending = [p.system for p in parts if p.required and p.state != "done"]
        if request.gateway_done_at is None or pending or not kinds.is_open(request.state):
            return request
        if request.state not in (kinds.IN_PROGRESS, kinds.EXTENDED):
            return request
        return await self._transition(request, kinds.COMPLETED, "", "system")

    async def _transition(
        self, request: StoredRequest, target: str, reason: str, actor: str, **extra: Any
    ) -> StoredRequest:
        try:
            kinds.check_transition(request.state, target, reason)
        except kinds.TransitionError as exc:
            raise RequestError(exc.code, str(exc), status_code=409) from exc
        now = fmt(self.clock())
        changes = {"state": target, "updated_at": now, "reason": reason, **extra}
        after = replace(request, **changes)
        parts = await self._call(self.store.systems(request.request_id))
        type_ = events.COMPLETED if target == kinds.COMPLETED else events.UPDATED
        change = "" if target == kinds.COMPLETED else target
        event = events.event(type_, now, after, parts, change=change)
        t = Transition(request.request_id, request.state, target, actor, reason, now)
        if not await self._call(
            self.store.update(request.request_id, request.state, changes, t, [event])
        ):
            raise RequestError(
                "conflict", "the request changed meanwhile; try again", status_code=409
            )
        return after

    async def _deny(self, request: StoredRequest, reason: str, actor: str) -> None:
        with contextlib.suppress(RequestError):  # someone else closed it meanwhile
            await self._transition(request, kinds.DENIED, reason, actor)

    # -- the subject's view -------------------------------------------------------------

    async def view(self, request: StoredRequest, base_url: str) -> dict[str, Any]:
        """What the requester sees: state, dates, reason, and the download link when ready."""
        body: dict[str, Any] = {
            "request_id": request.request_id,
            "type": request.type,
            "status": request.state,
            "received_at": request.received_at,
            "due_at": request.due_at,
        }
        if request.reason:
            body["reason"] = request.reason
        if (
            request.type in kinds.EXPORT_TYPES
            and request.gateway_done_at is not None
            and request.state in (kinds.IN_PROGRESS, kinds.EXTENDED, kinds.COMPLETED)
        ):
            body["download_url"] = await self.download_url(request, base_url)
        return body

    async def download_url(self, request: StoredRequest, base_url: str) -> str:
        key = await self.key()
        # Whole hours: every view within the hour gives the same link.
        now = int(self.clock().timestamp())
        expires = (now // 3600 + 1) * 3600 + credentials.DOWNLOAD_TTL
        sig = credentials.sign_download(key, request.request_id, expires)
        return (
            f"{base_url}/v1/sites/{request.site}/rights-requests/{request.request_id}"
            f"/download?expires={expires}&signature={sig}"
        )

    async def download(
        self, site: str, request_id: str, expires: str, signature: str
    ) -> tuple[StoredRequest, bytes]:
        """The ZIP for a genuine, unexpired link (403 otherwise, the same for every cause)."""
        key = await self.key()
        now = int(self.clock().timestamp())
        if not credentials.download_ok(key, request_id, expires, signature, now):
            raise RequestError("invalid_link", "the link is invalid or expired", status_code=403)
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        if (
            request is None
            or request.site != site
            or request.type not in kinds.EXPORT_TYPES
            or request.gateway_done_at is None
            or request.state == kinds.DENIED
        ):
            raise RequestError("invalid_link", "the link is invalid or expired", status_code=403)
        return request, build_zip(await self.export_data(request))

    async def export_data(self, request: StoredRequest) -> dict[str, Any]:
        if self.records is None or self.states is None:
            raise Unavailable("the gateway is starting", retry_after=1)
        subjects = []
        wanted: dict[str, set[str]] = {}
        for subject in request.subject_ids:
            history = await self._call(self.records.history(request.site, subject))
            state = await self._call(self.states.state_of(request.site, subject))
            records = history.get("history", [])
            for r in records:
                wanted.setdefault(r["banner_version"], set()).add(r["language"])
            subjects.append(
                {
                    "subject_id": subject,
                    "records": records,
                    "current": history.get("current"),
                    "preferences": state.get("preferences", {}),
                    "identities": state.get("identities", []),
                }
            )
        texts: dict[str, dict[str, Any]] = {}
        for version, languages in sorted(wanted.items()):
            stored = await self._call(self.records.banner_version(request.site, version))
            if stored is None:
                continue
            by_locale = stored.get("texts", {})
            texts[version] = {
                lang: by_locale.get(lang) or by_locale.get(lang.replace("-", "_"))
                for lang in sorted(languages)
            }
        return {
            "request": {
                "request_id": request.request_id,
                "site": request.site,
                "type": request.type,
                "received_at": request.received_at,
                "exported_at": fmt(self.clock()),
            },
            "subjects": subjects,
            "texts": texts,
        }

    # -- admin ----------------------------------------------------------------------------

    async def get(self, request_id: str, site: str | None = None) -> StoredRequest:
        try:
            uuid.UUID(request_id)
        except ValueError:
            raise NotFound("unknown_request", "no such request") from None
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        if request is None or (site is not None and request.site != site):
            raise NotFound("unknown_request", "no such request")
        return request

    async def listing(
        self,
        site: str | None,
        type_: str | None = None,
        states: Sequence[str] | None = None,
        overdue: bool = False,
        limit: int = 100,
    ) -> list[StoredRequest]:
        overdue_at = fmt(self.clock()) if overdue else None
        result: list[StoredRequest] = await self._call(
            self.store.listing(site, type_, states, overdue_at, min(limit, MAX_LIST))
        )
        return result

    def is_overdue(self, request: StoredRequest) -> bool:
        return kinds.is_open(request.state) and request.due_at < fmt(self.clock())

    async def detail(self, request: StoredRequest) -> dict[str, Any]:
        """The admin's view: the request, its transitions and its systems' parts."""
        parts = await self._call(self.store.systems(request.request_id))
        log_rows = await self._call(self.store.transitions(request.request_id))
        return {
            **events.request_view(request, parts),
            "overdue": self.is_overdue(request),
            "verification": request.verification,
            "gateway_done_at": request.gateway_done_at,
            "result": dict(request.result),
            "transitions": [
                {
                    "from": t.from_state,
                    "to": t.to_state,
                    "actor": t.actor,
                    "reason": t.reason,
                    "at": t.at,
                }
                for t in log_rows
            ],
            "systems": [
                {
                    "system": p.system,
                    "required": p.required,
                    "state": p.state,
                    "note": p.note,
                    "confirmed_at": p.confirmed_at,
                    "reminders": p.reminders,
                }
                for p in parts
            ],
        }

    async def complete(self, request: StoredRequest, reason: str, actor: str) -> StoredRequest:
        """Close a request as done: only once the gateway's part and every required system's
        part are done (409 names what is missing)."""
        parts = await self._call(self.store.systems(request.request_id))
        pending = [p.system for p in parts if p.required and p.state != "done"]
        if request.gateway_done_at is None:
            request = await self._fulfil(request)
        if request.gateway_done_at is None:
            raise RequestError("gateway_part_pending", "the gateway's own part is not done yet",
                               status_code=409)  # fmt: skip
        if pending:
            raise RequestError(
                "systems_pending",
                f"waiting for required system(s): {', '.join(pending)}",
                status_code=409,
            )
        if request.state == kinds.COMPLETED:
            return request
        return await self._transition(request, kinds.COMPLETED, reason, actor)

    async def deny(self, request: StoredRequest, reason: str, actor: str) -> StoredRequest:
        return await self._transition(request, kinds.DENIED, reason, actor)

    async def extend(
        self, request: StoredRequest, rights: SiteRights, reason: str, actor: str
    ) -> StoredRequest:
        deadline = rights.policy(request.rule_id).deadline_for(request.type)
        if deadline.extension.is_zero:
            raise RequestError(
                "no_extension", "the rule for this request allows no extension", status_code=409
            )
        received = parse_time(request.received_at)
        if deadline.period.unit == deadline.extension.unit == "months":
            # Counted from receipt (1 + 2 months from 31 January is 30 April, not 28 April).
            due = add(
                received, Period(deadline.period.amount + deadline.extension.amount, "months")
            )
        else:
            due = add(add(received, deadline.period), deadline.extension)
        return await self._transition(request, kinds.EXTENDED, reason, actor, due_at=fmt(due))

    # -- downstream systems ---------------------------------------------------------------

    def _secret(self, system: DownstreamSystem) -> bytes | None:
        value = self.env.get(system.secret_env, "")
        return value.encode("utf-8") if value else None

    async def confirm(
        self,
        request_id: str,
        system_name: str,
        rights_for: Callable[[str], SiteRights | None],
        timestamp: str,
        signature: str,
        body: bytes,
    ) -> StoredRequest:
        """A downstream system's signed confirmation; one 401 for every unverifiable call."""
        unauthorized = RequestError("unauthorized", "the signature does not verify",
                                    status_code=401)  # fmt: skip
        try:
            uuid.UUID(request_id)
        except ValueError:
            raise unauthorized from None
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        rights = rights_for(request.site) if request else None
        system = rights.system(system_name) if rights else None
        secret = self._secret(system) if system else None
        # Headers arrive as latin-1 text: anything but ASCII digits is refused, never encoded.
        well_formed = timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 12
        stamp = timestamp if well_formed else "0"
        expected = credentials.system_signature(secret or b"\0", stamp, body)
        fresh = well_formed and abs(self.clock().timestamp() - int(stamp)) <= CALLBACK_SKEW
        genuine = secrets.compare_digest(
            expected.encode("ascii"), signature.encode("utf-8", "replace")
        )
        if request is None or system is None or secret is None or not genuine or not fresh:
            raise unauthorized
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError("invalid_json", f"the body is not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("status") not in ("done", "failed"):
            raise RequestError("invalid_field", 'status must be "done" or "failed"', field="status")
        note = data.get("note", "")
        if not isinstance(note, str) or len(note) > 1000:
            raise RequestError("invalid_field", "a string of at most 1000 characters", field="note")
        at = fmt(self.clock())
        parts = await self._call(self.store.systems(request_id))
        after_parts = [
            replace(p, state=data["status"], confirmed_at=at) if p.system == system_name else p
            for p in parts
        ]
        change = events.event(
            events.UPDATED, at, request, after_parts, change="system_confirmed", system=system_name
        )
        changed = await self._call(
            self.store.confirm_system(request_id, system_name, data["status"], note, at, [change])
        )
        if changed and data["status"] == "done":
            return await self._maybe_complete(request, after_parts)
        return request

    # -- periodic work ----------------------------------------------------------------------

    async def tick(self, rights_for: Callable[[str], SiteRights | None] | None = None) -> None:
        """Retry unfinished gateway parts, expire stale codes, remind late systems, deliver
        events. Run every ``interval`` seconds by ``start``; tests call it with their clock."""
        rights_for = rights_for or self.rights_for
        now = self.clock()
        open_requests = await self.store.listing(None, None, sorted(kinds.OPEN_STATES), None,
                                                 MAX_OPEN)  # fmt: skip
        for request in open_requests:
            if request.state == kinds.VERIFYING:
                if (
                    request.code_expires_at is not None
                    and now.timestamp() >= request.code_expires_at
                ):
                    await self._deny(request, "the verification code expired", "system")
                continue
            try:
                if request.gateway_done_at is None:
                    request = await self._fulfil(request)
                await self._remind(request, rights_for(request.site), now)
            except Exception:  # one request's trouble must not stop the others' work
                log.exception("rights: periodic work on %s failed", request.request_id)
        await self.deliver_events()

    async def _remind(
        self, request: StoredRequest, rights: SiteRights | None, now: dt.datetime
    ) -> None:
        if rights is None or not kinds.is_open(request.state):
            return
        received = parse_time(request.received_at)
        overdue = request.due_at < fmt(now)
        for part in await self.store.systems(request.request_id):
            system = rights.system(part.system)
            if part.state != "pending" or system is None:
                continue
            last = parse_time(part.reminded_at) if part.reminded_at else received
            if add(last, system.remind_after) > now:
                continue
            kind = "escalation" if overdue else "reminder"
            log.warning(
                "rights: system %s has not confirmed request %s (%s, due %s): %s",
                part.system, request.request_id, request.type, request.due_at, kind,
            )  # fmt: skip
            self.m_reminders.labels(request.site, part.system, kind).inc()
            parts = await self.store.systems(request.request_id)
            event = events.event(
                events.UPDATED, fmt(now), request, parts, change=kind, system=part.system
            )
            await self.store.remind_system(request.request_id, part.system, fmt(now), [event])

    async def deliver_events(self) -> int:
        """POST pending events to the webhook (signed as the record batches are); the number
        delivered. Without a webhook they are marked delivered: there is nowhere to send."""
        pending = await self.store.pending_events(100)
        if not pending:
            return 0
        at = fmt(self.clock())
        if self.settings.webhook_url and self._client is not None:
            body = orjson.dumps({"events": [e.body for e in pending]})
            timestamp = str(int(self.clock().timestamp()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.settings.webhook_secret.encode(), timestamp, body),
            }
            try:
                response = await self._client.post(
                    self.settings.webhook_url, content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                log.warning("rights: webhook unreachable (%r); events kept for later", exc)
                return 0
            if not 200 <= response.status_code < 300:
                log.warning("rights: webhook answered %d; events kept", response.status_code)
                return 0
        await self.store.delivered([e.seq for e in pending], at)
        return len(pending)

    async def metrics_text(self) -> bytes:
        """Refresh the open/overdue gauges from the store, then the registry's text."""
        from prometheus_client import generate_latest

        try:
            open_requests = await self.store.listing(
                None, None, sorted(kinds.OPEN_STATES), None, MAX_OPEN
            )
        except Exception as exc:
            log.warning("rights: cannot read the queue for metrics: %s", exc)
            return generate_latest(self.metrics_registry)
        now = fmt(self.clock())
        counts: dict[str, list[int]] = {}
        for r in open_requests:
            entry = counts.setdefault(r.site, [0, 0])
            entry[0] += 1
            entry[1] += r.due_at < now
        for site in {*counts, *(s for (s,) in self._seen_sites())}:
            opened, overdue = counts.get(site, [0, 0])
            self.m_open.labels(site).set(opened)
            self.m_overdue.labels(site).set(overdue)
        return generate_latest(self.metrics_registry)

    def _seen_sites(self) -> list[tuple[str]]:
        # Sites with a gauge already: set back to 0 when their last request closes.
        return [(s.labels["site"],) for metric in self.m_open.collect() for s in metric.samples]
