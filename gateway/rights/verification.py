"""Taking a request and verifying its requester: a receipt or an API key at once, an e-mail
identity by a one-time code (sent in the background, attempts limited, expiring).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace

from gateway.rights import credentials, events, kinds
from gateway.rights.deadlines import add
from gateway.rights.fulfilment import Fulfilment
from gateway.rights.mailer import code_message, send
from gateway.rights.ports import NewRequest, RequestError, fmt, unknown_request
from gateway.sinks.rights import StoredRequest, SystemPart, Transition

log = logging.getLogger("gateway.rights")


class Intake(Fulfilment):
    """Takes requests and verifies their requesters."""

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
        # The cluster-wide bound (every node's requests are in the store); the web layer's
        # RightsLimits answer 429 before this on one node.
        limit = self.settings.rights_codes_per_hour  # 0: no limit
        if email and (not limit or recent <= limit):
            # Sent in the background: the answer takes the same time whether the address is
            # a customer's or not, and whether the relay is fast or slow.
            self._spawn(self._mail(email, new, code))
        else:
            log.warning("rights: code e-mail suppressed (more than %d requests for one "
                        "identity within an hour)", limit)  # fmt: skip
        return replace(request, **changes)  # type: ignore[arg-type]

    async def _mail(self, to: str, new: NewRequest, code: str) -> None:
        if self._smtp is None:
            log.error("rights: GATEWAY_SMTP_URL is empty; a verification code was not sent")
            self.m_mail_errors.inc()
            return
        message = code_message(
            self.settings.smtp_from, to, new.site_name, code, credentials.CODE_TTL // 60,
            new.mail_texts, new.mail_language, new.mail_direction,
        )  # fmt: skip
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
            raise unknown_request() from None
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        stored = request.token_hash if request else "0" * 64
        if not credentials.token_matches(token, stored) or request is None:
            raise unknown_request()
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
