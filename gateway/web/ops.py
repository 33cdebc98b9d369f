"""Operator endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.errors import BadRequest
from gateway.web import worker_metrics
from gateway.web.auth import ops_authorized


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


def readiness(app_state: Any) -> tuple[bool, dict[str, Any]]:
    """Ready when sites are loaded, the last reload was valid and recording is healthy (see
    RecordingService.health: outbox writable, tasks up, disk free, forwarder not stalled)."""
    gateway = app_state.gateway
    catalog = gateway.catalog
    checks: dict[str, Any] = {
        "sites": {b.site.id: b.banner_version for b in catalog},
        "catalog_error": catalog.last_error,
        "geo": gateway.locator.database_info(),
    }
    ready = len(catalog) > 0 and catalog.last_error is None
    recording = getattr(app_state, "recording", None)
    if recording is not None:
        health = recording.health()
        checks["recording"] = health
        ready = ready and bool(health.get("ok", True))
    return ready, checks


async def readyz(request: Request) -> Response:
    ready, checks = readiness(request.app.state)
    shown = checks if ops_authorized(request) else {}  # details name files and errors
    return _json({"status": "ready" if ready else "not ready", **shown}, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    """This process's metrics; under `serve --workers N`, every worker's (worker_metrics)."""
    state = request.app.state
    if state.settings.ops_token and not ops_authorized(request):
        raise BadRequest(
            "unauthorized", "send `Authorization: Bearer <ops token>`", status_code=401
        )
    body = await own_metrics(state)
    role = getattr(state, "worker", None)
    if role is not None:
        body = await worker_metrics.all_workers(state.settings.data_dir, role, body)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


async def own_metrics(state: Any) -> bytes:
    """Process-wide metrics, then the recording service's own (outbox, forwarder)."""
    body = generate_latest(REGISTRY)
    recording = getattr(state, "recording", None)
    if recording is not None:
        body += generate_latest(recording.metrics_registry)
    rights = getattr(state, "rights", None)
    if rights is not None:
        body += await rights.metrics_text()
    worker = getattr(state, "worker", None)
    if worker is not None:  # the supervisor's count, handed to this worker when it started
        body += (
            "# HELP gateway_worker_restarts_total Times the supervisor restarted this worker "
            "after it exited or was killed.\n"
            "# TYPE gateway_worker_restarts_total counter\n"
            f"gateway_worker_restarts_total {worker.restarts}\n"
        ).encode()
    cache = state.gateway.locator.cache_info()
    body += (
        "# HELP gateway_geoip_cache_hits_total GeoIP lookups answered from the cache.\n"
        "# TYPE gateway_geoip_cache_hits_total counter\n"
        f"gateway_geoip_cache_hits_total {cache['hits']}\n"
        "# HELP gateway_geoip_cache_misses_total GeoIP lookups that read the database.\n"
        "# TYPE gateway_geoip_cache_misses_total counter\n"
        f"gateway_geoip_cache_misses_total {cache['misses']}\n"
    ).encode()
    return body


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
