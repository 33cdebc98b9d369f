"""The recording path's lifetime: outbox, sinks, forwarder and receipts under one owner."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from gateway.core.errors import BadRequest, NotFound, Unavailable
from gateway.core.preference_record import LINK_KIND, LinkRecord
from gateway.core.ratelimit import WriteLimits
from gateway.core.record_codec import new_record
from gateway.core.settings import Settings
from gateway.core.tasks import Supervisor, SupervisorCollector
from gateway.recording import keyring, readiness
from gateway.recording.consent import (
    RecordContext,
    ValidatedConsent,
    check_rule,
    enrich,
    validate,
)
from gateway.recording.datalock import OUTBOX_LOCK_FILE, DataDirLock
from gateway.recording.fields import Uuid7Clock, parse_body, rfc3339_utc
from gateway.recording.forwarder import Forwarder, ForwarderCollector
from gateway.recording.keyed_appends import KeyedAppends
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import Appended
from gateway.recording.outboxes import WorkerRole, drain_orphans, orphans, own_dir
from gateway.recording.preference import PreferenceContext
from gateway.recording.preference import enrich as enrich_preference
from gateway.recording.preference import validate as validate_preference
from gateway.recording.receipts import Receipts, canonical_json
from gateway.recording.store_retries import StoreRetries
from gateway.recording.subjects import (
    SubjectForbidden,
    SubjectKeys,
    check_secret,
    gateway_subject_id,
)
from gateway.recording.submission import Placement, Submission
from gateway.sinks import open_sinks
from gateway.sinks.base import Sink, Store
from gateway.sites.catalog import SiteBundle
from gateway.standards.issuing import Issued, strings_of
from gateway.standards.record_check import record_signals

T = TypeVar("T")

log = logging.getLogger("gateway.recording")


class Recorded(NamedTuple):
    """A committed consent as its subject is told: the append's answer and the subject id
    the gateway derived from the subject's secret."""

    record_id: str
    recorded_at: str
    receipt: str
    duplicate: bool
    subject_id: str
    iab: Issued | None = None  # the TC/GPP strings the record carries (standards/record_check)


class RecordingService:
    """Start it in the app's lifespan; handlers call ``record_consent`` and ``history``.

    ``placement`` (the serving path's Gateway) finds sites and places visitors; a service
    built without one (outbox and forwarder tests) records prepared consents only.
    ``worker``: this process is one of `serve --workers N`'s (recording/outboxes.py).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        placement: Placement | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        self.settings = settings
        self.placement = placement
        self.worker = worker
        self.outbox_dir = own_dir(settings.data_dir, worker)
        self.node_id = settings.effective_node_id
        # Own registry by default so several services (tests) never clash on metric names.
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        # Every background task of the process runs under this supervisor (the app adds the
        # reload watcher): failures are logged, counted on /metrics, retried with backoff.
        self.tasks = Supervisor(max_backoff=settings.task_max_backoff)
        # Per-client and per-subject write limits (429), checked once the client is located:
        # the node's, shared by its workers.
        self.limits = WriteLimits(settings, shared=worker.limits if worker else None)
        self.outbox = Outbox(
            self.outbox_dir / FILE_NAME,
            durability=settings.durability,
            max_records=settings.outbox_max_records,
            checkpoint_bytes=settings.outbox_checkpoint_mb * 1024 * 1024,
            checkpoint_interval=settings.outbox_checkpoint_interval,
            tasks=self.tasks,
        )
        # Appends through the outbox, keyed ones answered across the node's workers, and a
        # retry another node took first answered from the central store.
        self.store: Store | None = None
        retries = StoreRetries(lambda: self.store, self.metrics_registry)
        self.appends = KeyedAppends(self.outbox, self.metrics_registry, worker, retries)
        self.sinks: list[Sink] = []
        self.forwarder: Forwarder | None = None
        self.receipts: Receipts | None = None
        self.subjects: SubjectKeys | None = None
        self._collectors: list[Collector] = []
        self._clock = Uuid7Clock()
        # A single process owns the data dir (a worker's supervisor does), and each its outbox.
        self._locks = [DataDirLock(self.outbox_dir, OUTBOX_LOCK_FILE)]
        if worker is None:
            self._locks.insert(0, DataDirLock(settings.data_dir))
        self._accepting = False

    async def start(self) -> None:
        """Own the data dir, open the outbox and sinks, then start forwarding."""
        try:
            for lock in self._locks:
                # The data dir's at once; the outbox's after its last owner (a restarted
                # worker's predecessor) is gone.
                wait = 10.0 if lock.path.name == OUTBOX_LOCK_FILE else 0.0
                await asyncio.to_thread(lock.acquire, wait)
            await self._open()
        except BaseException:
            await self.outbox.close()
            for lock in self._locks:
                lock.release()
            raise

    async def _open(self) -> None:
        try:
            self._use_keys(await keyring.resolve(self.settings))
        except keyring.KeysUnavailable as exc:
            # Serve banners; answer records 503 until the shared key can be read.
            log.warning("recording waits for the shared receipt key: %s", exc)
            self.tasks.start("receipt-key", self._fetch_keys)
        await self.outbox.open()
        self.sinks = open_sinks(self.settings)
        for sink in self.sinks:
            await sink.open()
        primary = self.sinks[0]
        self.store = primary if isinstance(primary, Store) else None
        self.forwarder = Forwarder(
            self.outbox,
            self.sinks,
            batch_size=self.settings.forward_batch_size,
            max_backoff=self.settings.forward_max_backoff,
            linger=self.settings.forward_linger,
            tasks=self.tasks,
        )
        self.forwarder.start()
        adopted = orphans(self.settings.data_dir, self.worker)
        if adopted:  # outboxes of a worker count no longer used: delivered, then removed
            self.tasks.start(
                "outbox-orphans", lambda: drain_orphans(self.settings, adopted, self.sinks)
            )
        self._collectors = [ForwarderCollector(self.forwarder), SupervisorCollector(self.tasks)]
        for collector in self._collectors:
            self.metrics_registry.register(collector)
        self._accepting = True

    def _use_keys(self, ring: keyring.KeyRing) -> None:
        self.receipts = Receipts(ring.current, ring.previous)
        self.subjects = SubjectKeys(ring.subject)

    async def _fetch_keys(self) -> None:
        """Retried with backoff by the task supervisor until the central store answers."""
        self._use_keys(await keyring.resolve(self.settings))
        log.info("the shared receipt key is read: recording resumes")

    async def stop(self) -> None:
        """Stop accepting, drain the forwarder within ``shutdown_drain``, close everything."""
        self._accepting = False
        if self.forwarder is not None:
            await self.forwarder.stop(self.settings.shutdown_drain)
        try:
            await self.outbox.close()
        except Exception:  # shutdown goes on: the sinks are closed and the lock released
            log.exception("closing the outbox failed")
        await self.tasks.stop()
        for sink in self.sinks:
            try:
                await asyncio.wait_for(sink.close(), timeout=5.0)
            except Exception as exc:  # closing must go on for the other sinks
                log.warning("closing sink %s failed: %s", sink.name, exc)
        for collector in self._collectors:
            self.metrics_registry.unregister(collector)
        self._collectors = []
        for lock in reversed(self._locks):
            lock.release()

    def site(self, site_id: str) -> SiteBundle:
        """The site's current bundle; NotFound (404) for a site the gateway does not serve."""
        bundle = self._placement().catalog.get(site_id)
        if bundle is None:
            raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
        return bundle

    async def record_consent(self, bundle: SiteBundle, submission: Submission) -> Recorded:
        """The recording use case: parse, prove the subject, validate, locate and decide,
        then enrich, sign and durably append; returns once the record is committed. Raises
        BadRequest naming the input at fault (403 without the subject's secret), or
        Unavailable when the record cannot be kept now."""
        body = self.bind_subject(
            bundle.site.id, parse_body(submission.body, submission.content_type)
        )
        consent = validate(body, bundle.site, bundle.known_versions)
        placement = self._placement()
        # Where the visitor is comes from detection only, never from the request's query.
        ip, region = placement.locator.locate(submission.peer, submission.headers)
        self.limits.check(ip, bundle.site.id, consent.subject_id)  # 429 past the write limits
        region, gpc, language, rule = placement.decide(
            bundle, region, submission.accept_language, submission.gpc_values
        )
        check_rule(consent, bundle.site, rule)
        # A "gpc" record is the browser's own GPC signal (navigator.globalPrivacyControl).
        iab = record_signals(
            body, bundle.issuer, rule.id, region, gpc or consent.action == "gpc",
            consent.choices, consent.language or language, time.time_ns() // 100_000_000,
        )  # fmt: skip
        context = RecordContext(
            ip=ip,
            region=region,
            rule=rule,
            gpc=gpc,
            user_agent=submission.user_agent,
            origin=submission.origin,
            language=language,
            consent_revision=bundle.consent_revision,
        )
        signals = None if iab is None else strings_of(iab)
        appended = await self.record(consent, context, signals)
        return Recorded(*appended[:4], consent.subject_id, iab)

    def check_preferences(self, bundle: SiteBundle, body: Mapping[str, Any]) -> None:
        """Validate a change on a subject's behalf before its subject is found or made (an
        identity is linked only for a change that will be recorded)."""
        validate_preference(body, bundle.site, "", via_api=True)

    async def record_preferences(
        self,
        bundle: SiteBundle,
        body: Mapping[str, Any],
        submission: Submission,
        *,
        actor: str = "subject",
        subject_id: str | None = None,
    ) -> Recorded:
        """Record a preference change like a consent: prove the subject (its secret, unless
        ``actor`` is an API key or a signed link and ``subject_id`` or the body names the
        subject), validate against the site's model, enrich, sign and durably append."""
        site = bundle.site
        via_api = actor != "subject"
        if not via_api:
            subject_id = self.bind_subject(site.id, body)["subject_id"]
        elif subject_id is None:
            subject_id = gateway_subject_id(body.get("subject_id"))
        change = validate_preference(body, site, subject_id, via_api=via_api)
        placement = self._placement()
        ip, region = placement.locator.locate(submission.peer, submission.headers)
        self.limits.check(ip, site.id, subject_id)  # 429 past the write limits
        _, _, language, _ = placement.decide(
            bundle, region, submission.accept_language, submission.gpc_values
        )
        context = PreferenceContext(ip, submission.user_agent, submission.origin, language, actor)
        if not self._accepting or self.receipts is None:
            raise Unavailable("the gateway is starting or shutting down", retry_after=2)
        record_id, now_ns = self._clock.next()
        record = enrich_preference(
            change, context, record_id=record_id, recorded_at=rfc3339_utc(now_ns),
            node_id=self.node_id,
        )  # fmt: skip
        body_bytes = canonical_json(record)
        digest = hashlib.sha256(body_bytes).digest()  # the receipt's and the key's
        receipt = self.receipts.issue(record, digest=digest)
        appended = await self.appends.append(
            record, receipt, body_bytes, now_ns, self.receipts, change.attempt > 1, digest
        )
        return Recorded(*appended[:4], subject_id)

    async def record_links(
        self, site: str, subject_id: str, identities: Sequence[tuple[str, str]], source: str
    ) -> None:
        """Record identity links (made in the directory already) through the outbox, so the
        stores keep their history and the webhook and NATS hear of them; no receipt."""
        if not self._accepting:
            raise Unavailable("the gateway is starting or shutting down", retry_after=2)
        for identity_type, digest in identities:
            record_id, now_ns = self._clock.next()
            record = LinkRecord(
                kind=LINK_KIND, record_id=record_id, recorded_at=rfc3339_utc(now_ns), site=site,
                subject_id=subject_id, identity_type=identity_type, identity_hash=digest,
                source=source, node_id=self.node_id,
            )  # fmt: skip
            await self.outbox.append(record, "")

    def subject_keys(self) -> SubjectKeys:
        if self.subjects is None:
            raise Unavailable("the gateway is starting or shutting down", retry_after=2)
        return self.subjects

    def bind_subject(self, site: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The body with ``subject_id`` derived from its ``subject_secret`` (which goes: it is
        never stored). A ``subject_id`` sent along must be the secret's own: naming a subject
        without its secret is refused (403), so no one writes for an id they only know."""
        secret = body.get("subject_secret")
        if secret is None:
            if body.get("subject_id") is not None:
                raise SubjectForbidden(
                    "subject_secret_required",
                    "writing for a subject needs its secret (subject_secret), not only its id",
                )
            raise BadRequest(
                "missing_field",
                "subject_secret is required: 32 random lower-case hex digits the client keeps",
                field="subject_secret",
            )
        derived = self.subject_keys().subject_id(site, check_secret(secret))
        claimed = body.get("subject_id")
        if claimed is not None and claimed != derived:
            raise SubjectForbidden(
                "subject_secret_mismatch", "the subject secret does not belong to subject_id"
            )
        bound = dict(body)
        del bound["subject_secret"]
        bound["subject_id"] = derived
        return bound

    def _placement(self) -> Placement:
        if self.placement is None:
            raise RuntimeError("this RecordingService was built without a placement")
        return self.placement

    async def record(
        self,
        consent: ValidatedConsent,
        context: RecordContext,
        signals: Mapping[str, Any] | None = None,
    ) -> Appended:
        """Enrich, sign and durably append one consent; returns once it is committed.
        ``signals`` join the record's (the TC and GPP strings it carries)."""
        if not self._accepting:
            raise Unavailable("the gateway is starting or shutting down", retry_after=2)
        if self.receipts is None:
            raise Unavailable("the shared receipt key cannot be read yet", retry_after=5)
        record_id, now_ns = self._clock.next()
        record = enrich(
            consent,
            context,
            record_id=record_id,
            recorded_at=rfc3339_utc(now_ns),
            node_id=self.node_id,
        )
        if signals:
            record = new_record({**record.__dict__, "signals": {**record.signals, **signals}})
        body = canonical_json(record)
        digest = hashlib.sha256(body).digest()  # the receipt's and the key's
        receipt = self.receipts.issue(record, digest=digest)
        return await self.appends.append(
            record, receipt, body, now_ns, self.receipts, consent.attempt > 1, digest
        )

    async def _read_store(
        self,
        read: Callable[[Store], Awaitable[T]],
        missing: str = "no readable store is configured",
    ) -> T:
        """``read`` of the primary store; 503 when there is none or it cannot be reached."""
        if self.store is None:
            raise Unavailable(missing)
        try:
            return await read(self.store)
        except Exception as exc:  # the store may be down; the caller answers 503
            raise Unavailable(f"the consent store is unreachable: {exc}", retry_after=5) from exc

    async def history(self, site: str, subject_id: str) -> dict[str, Any]:
        """A subject's current choices and history from the primary store."""
        return await self._read_store(lambda store: store.subject_history(site, subject_id))

    async def preference_history(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        """A subject's preference records from the primary store, newest first."""
        return await self._read_store(lambda store: store.preference_history(site, subject_id))

    async def list_versions(self, site_id: str) -> list[dict[str, Any]]:
        """The banner versions the store keeps for a site, newest first."""
        return await self._read_store(
            lambda store: store.list_versions(site_id), "no store is configured"
        )

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None:
        """The exact texts stored for one banner version, or None."""
        if self.store is None:
            raise Unavailable("no store is configured")
        return await self.store.banner_version(site_id, banner_version)

    def health(self) -> dict[str, Any]:
        """Readiness facts for /readyz; ``problems`` names what makes it unready."""
        return readiness.report(
            self.settings, accepting=self._accepting, keys_ready=self.receipts is not None,
            outbox=self.outbox, outbox_dir=self.outbox_dir, forwarder=self.forwarder,
            tasks=self.tasks,
        )  # fmt: skip
