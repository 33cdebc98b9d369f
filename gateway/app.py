"""The app factory: ``create_app(settings)``; the lifespan owns catalog, locator and recording."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from gateway.audit import service as audit_service
from gateway.core.jurisdictions import RuleTable, load_rules
from gateway.core.settings import Settings, load_settings
from gateway.geo.locator import Locator
from gateway.preferences.service import PreferenceService
from gateway.recording.outboxes import WorkerRole
from gateway.recording.service import RecordingService
from gateway.rights.service import RightsService
from gateway.serving.gateway import Gateway
from gateway.serving.render import Renderer
from gateway.serving.snippet import Snippet
from gateway.serving.switches import RuleSwitches
from gateway.serving.validation import validate_bundle
from gateway.serving.watch import Watcher
from gateway.sites import versions
from gateway.sites.catalog import LiveCatalog, static_dir
from gateway.web import (
    accesslog,
    admin,
    admin_session,
    api,
    audit,
    errors,
    iab,
    ops,
    privacy,
    public,
    records,
    rights,
    rights_admin,
    rights_public,
    unsubscribe,
)
from gateway.web import (
    preferences as preference_routes,
)
from gateway.web.framing import TransferCodings
from gateway.web.front import HotPaths
from gateway.web.middleware import MetricsMiddleware
from gateway.web.worker_metrics import MetricsSocket

log = logging.getLogger("gateway")


def build_gateway(settings: Settings, rules: RuleTable | None = None) -> Gateway:
    """Load everything the serving path reads; raises ConfigError on invalid input.

    ``rules``: the jurisdiction rule table; by default the shipped one, read here.
    """
    rules = rules or load_rules()
    # Every template must render in every locale before a version is served.
    catalog = LiveCatalog(
        settings.banners_dir, settings.locales_dir, rules, validate=validate_bundle
    )
    catalog.load()
    locator = Locator(settings)
    locator.load()
    return Gateway(settings, catalog, locator, Renderer(), Snippet.load(static_dir()))


def tune_gc() -> None:
    """Move start-up objects out of the collector's sight and collect less often.

    Measured under load: full collections over ~70k long-lived objects took 45-108 ms every
    ~2 s and were the p99 spikes; after freezing they take 2-8 ms. Only for serving
    processes: tests build many apps in one process.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 50, 1000)


class GatewayApp(Starlette):
    """Starlette with the front (request limits, hot routes) outside its middleware.

    The front (gateway/web/front.py) answers the hot routes of this app's own route table;
    ``front.app`` is the routed path (Starlette's middleware, router and handlers, inside the
    request log's wrapper when the log is on).
    """

    front: HotPaths
    access_log: tuple[str, float] = ("off", 0.0)  # GATEWAY_ACCESS_LOG and its sample rate

    def build_middleware_stack(self) -> ASGIApp:
        routed = super().build_middleware_stack()
        mode, sample = self.access_log
        access = None
        if mode != "off":
            # The routed path is wrapped; the hot routes and the refusals log themselves
            # through the same object (a served banner pays for a line only when it gets one).
            access = accesslog.AccessLog(routed, mode, sample, region_of=accesslog.region_from_app)
            routed = access
        self.front = HotPaths(routed, self.router.routes, access)
        # Transfer codings other than chunked are refused before anything reads a body.
        return TransferCodings(self.front, access)


def create_app(
    settings: Settings | None = None, *, serving: bool = False, worker: WorkerRole | None = None
) -> Starlette:
    """Build the ASGI app; everything heavy happens in the lifespan, not at import.

    ``serving``: this process only serves (the CLI, the uvicorn factory), so tune the GC.
    ``worker``: this process is one of `serve --workers N`'s (its own outbox, shared metrics).
    """
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = build_gateway(settings)
        recording = RecordingService(settings, placement=gateway, worker=worker)
        app.state.worker = worker
        app.state.gateway = gateway
        app.state.recording = recording
        app.state.settings = settings
        app.state.preferences = preferences = PreferenceService(settings)
        app.state.limits = recording.limits  # admin writes share the write limits
        await recording.start()
        await preferences.start()
        app.state.rights = rights_service = RightsService(settings, directory=preferences.directory)
        rights.wire(app.state, rights_service)
        await rights_service.start()

        async def publish() -> None:
            await versions.publish_current(gateway.catalog, recording.store)

        await publish()
        watcher = Watcher(settings, gateway, on_reload=publish)
        app.state.watcher = watcher
        if settings.reload:
            watcher.start(recording.tasks)  # supervised beside the recording tasks
        # Banner impressions counted in memory go to the central store every minute.
        recording.tasks.start(
            "impressions",
            lambda: audit_service.flush_impressions_forever(settings, gateway.impressions),
        )
        # Regions whose law starts on a date switch on the day (regions_from), reload or not.
        switches = RuleSwitches(gateway, gateway.catalog.rules.region_map)
        switches.start()
        peers = None
        if worker is not None:  # /metrics on any worker reports them all
            peers = MetricsSocket(settings.data_dir, worker, lambda: ops.own_metrics(app.state))
            await peers.start()
        if serving:
            tune_gc()
        log.info("serving %d site(s) from %s", len(gateway.catalog), settings.banners_dir)
        try:
            yield
        finally:
            # Fixed order: stop reloading, drain and close recording, then close readers.
            if peers is not None:
                await peers.stop()
            await watcher.stop()
            await switches.stop()
            await rights_service.stop()
            await recording.stop()
            await preferences.stop()
            gateway.locator.close()

    app = GatewayApp(
        routes=[
            *public.routes(),
            *privacy.routes(),
            *records.routes(),
            *preference_routes.routes(),
            *unsubscribe.routes(),
            *iab.routes(),
            *api.routes(),
            *rights_public.routes(),
            *rights_admin.routes(),
            *admin.routes(),
            *admin_session.routes(),
            *audit.routes(),
            *ops.routes(),
        ],
        # The two hot paths are answered by the front, outside this stack; the rest is routed.
        middleware=[Middleware(MetricsMiddleware)],
        exception_handlers=errors.HANDLERS,
        lifespan=lifespan,
    )
    app.access_log = (settings.access_log, settings.access_log_sample)
    # No trailing-slash redirect: its Location was built from the client's Host header.
    app.router.redirect_slashes = False
    return app


def factory() -> Starlette:
    """Entry for `uvicorn --factory gateway.app:factory` with settings from the environment."""
    accesslog.install()  # as `consent-gateway serve` does: no credentials in the access log
    return create_app(load_settings(), serving=True)
