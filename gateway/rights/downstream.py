"""Downstream systems: their signed confirmations, reminders and escalations, the periodic
work, and the delivery of request events to the webhook.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import replace

import orjson

from gateway.rights import credentials, events, kinds
from gateway.rights.base import MAX_OPEN
from gateway.rights.deadlines import add
from gateway.rights.fulfilment import Fulfilment
from gateway.rights.policy import DownstreamSystem, SiteRights
from gateway.rights.ports import RequestError, fmt, parse_time
from gateway.sinks.rights import StoredRequest
from gateway.sinks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger("gateway.rights")

CALLBACK_SKEW = 300  # seconds a downstream confirmation's timestamp may be off


class Downstream(Fulfilment):
    """Downstream systems' parts of requests, and the periodic work."""

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
            import httpx  # the client exists, so httpx is imported already

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
