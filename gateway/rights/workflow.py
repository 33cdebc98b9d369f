"""The admin queue: find, list and show requests; complete, deny or extend them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from gateway.core.errors import NotFound
from gateway.rights import events, kinds
from gateway.rights.deadlines import Period, add
from gateway.rights.fulfilment import Fulfilment
from gateway.rights.policy import SiteRights
from gateway.rights.ports import RequestError, fmt, parse_time
from gateway.sinks.rights import StoredRequest

log = logging.getLogger("gateway.rights")

MAX_LIST = 500


class Workflow(Fulfilment):
    """The admin queue over the request workflow."""

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
