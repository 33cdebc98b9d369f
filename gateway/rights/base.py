"""The rights service's core: its collaborators and metrics, store calls, the deployment's
rights key, background tasks, and the one way a request changes state (a recorded transition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.core.errors import BadRequest, ConfigError, Unavailable
from gateway.core.settings import Settings
from gateway.rights import events, kinds
from gateway.rights.mailer import SmtpTarget, parse_smtp_url
from gateway.rights.policy import SiteRights
from gateway.rights.ports import Clock, RecordReader, RequestError, StateReader, fmt, utc_now
from gateway.sinks import directory_for
from gateway.sinks.directory import Directory
from gateway.sinks.rights import RightsStore, StoredRequest, SystemPart, Transition
from gateway.sinks.rights_sqlite import SqliteRights
from gateway.sinks.sqlite import FILE_NAME

if TYPE_CHECKING:  # imported by the service when a webhook is configured
    import httpx

log = logging.getLogger("gateway.rights")


RIGHTS_SECRET = "rights_key"  # noqa: S105 (the name of a stored secret, not one)
MAX_OPEN = 100_000  # open requests are thousands at most: the periodic work sees all


def store_for(settings: Settings) -> RightsStore:
    url = settings.store_url.strip()
    if not url:
        return SqliteRights(settings.data_dir / FILE_NAME)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.sinks.rights_postgres import PostgresRights  # asyncpg only when used

        return PostgresRights(url)
    raise ConfigError("GATEWAY_STORE_URL must be empty or a postgresql:// URL")


class RightsBase:
    """The service's state and what every part of it uses: the store calls, the rights key,
    background tasks and the workflow's transitions."""

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
