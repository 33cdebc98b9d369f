"""`consent-gateway rights list|show|complete|deny|erase-reasons`: the rights-request queue
from a shell."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence

import asyncpg
import orjson

from gateway.core.errors import BadRequest, ConfigError, Unavailable
from gateway.core.settings import Settings
from gateway.rights import kinds
from gateway.rights.service import RightsService


@contextlib.asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[RightsService]:
    """The rights service on the central store, without its periodic work."""
    service = RightsService(settings)
    try:
        await service.start(interval=0)
        yield service
    except (OSError, TimeoutError, sqlite3.Error, asyncpg.PostgresError, Unavailable) as exc:
        raise ConfigError(
            f"the central store is unreachable: {exc}", where="GATEWAY_STORE_URL"
        ) from exc
    except BadRequest as exc:
        raise ConfigError(exc.detail, hint=exc.code) from exc
    finally:
        await service.stop()


async def list_requests(
    settings: Settings, site: str | None, type_: str | None, states: Sequence[str], overdue: bool
) -> list[str]:
    if type_ is not None and type_ not in kinds.TYPES:
        raise ConfigError(f"unknown type {type_!r}", hint=", ".join(kinds.TYPES))
    for state in states:
        if state not in kinds.STATES:
            raise ConfigError(f"unknown state {state!r}", hint=", ".join(kinds.STATES))
    async with _service(settings) as service:
        found = await service.listing(site, type_, list(states) or None, overdue, 500)
        rows = [("request id", "site", "type", "state", "received", "due", "")]
        rows += [
            (r.request_id, r.site, r.type, r.state, r.received_at[:16], r.due_at[:16],
             "OVERDUE" if service.is_overdue(r) else "")
            for r in found
        ]  # fmt: skip
    if len(rows) == 1:
        return ["no rights requests" + (f" for site {site}" if site else "")]
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


async def show(settings: Settings, request_id: str) -> list[str]:
    async with _service(settings) as service:
        detail = await service.detail(await service.get(request_id))
    return orjson.dumps(detail, option=orjson.OPT_INDENT_2).decode().splitlines()


async def act(settings: Settings, action: str, request_id: str, reason: str) -> list[str]:
    async with _service(settings) as service:
        request = await service.get(request_id)
        if action == "complete":
            request = await service.complete(request, reason, "cli")
        else:
            request = await service.deny(request, reason, "cli")
        await service.deliver_events()
    return [f"request {request.request_id} is {request.state}"]


async def erase_reasons(settings: Settings, request_ids: Sequence[str]) -> list[str]:
    """Erase the free-text reasons of these requests (a reason may name the requester): their
    transitions', the current one and the copies in their events, the audit chain staying
    verifiable; every id must name a request, else nothing is erased."""
    async with _service(settings) as service:
        for request_id in request_ids:
            await service.get(request_id)  # 404 (an error, nothing erased) for an unknown id
        erased = await service.store.erase_reasons(list(request_ids))
    return [f"erased the reasons of {erased} transitions of {len(request_ids)} requests"]
