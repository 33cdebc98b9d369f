"""Admin endpoints of the audit trail: export, proof pack, consent reports, chain check.

Thin: each checks the admin token, validates its parameters (gateway/audit/params.py) and
calls gateway/audit/service.py. Exports stream (constant memory for any size).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.audit import params, rows, service
from gateway.core.errors import BadRequest, NotFound
from gateway.sites.catalog import static_dir
from gateway.web.auth import authorize
from gateway.web.session_cookie import session_csrf

# Autoescaped and separate from the site templates' sandbox: these pages show stored
# visitor input (user agent, page URL) and must never run it.
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "admin_templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
_SUBJECT_MAX = 128


def _site(request: Request) -> str:
    authorize(request)
    site: str = request.path_params["site"]
    if request.app.state.gateway.catalog.get(site) is None:
        raise NotFound("unknown_site", f"no site named {site[:64]!r}")
    return site


def _json(data: Any) -> Response:
    return Response(
        orjson.dumps(data),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def export(request: Request) -> Response:
    site = _site(request)
    q = request.query_params
    fmt = params.fmt(q.get("format"))
    start, end = params.when(q.get("from"), "from"), params.when(q.get("to"), "to")
    filters = params.filters(q)
    settings = request.app.state.settings
    service.reader_for(settings)  # a store without the audit trail: 409 before streaming
    name = f"{site}-records.{fmt}"
    return StreamingResponse(
        service.export(settings, site, start, end, filters, fmt),
        media_type=_CONTENT_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


async def proof(request: Request) -> Response:
    site = _site(request)
    subject = request.path_params["subject_id"]
    if not 0 < len(subject) <= _SUBJECT_MAX:
        raise BadRequest("invalid_parameter", "subject_id: 1-128 characters", field="subject_id")
    pack = await service.proof(request.app.state.settings, site, subject)
    if not pack["records"]:
        raise NotFound("unknown_subject", "no records of this subject on this site")
    if "text/html" in request.headers.get("accept", ""):
        page = _PAGES.get_template("proof.html").render(proof=pack)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
    return _json(pack)


async def consent_report(request: Request) -> Response:
    site = _site(request)
    q = request.query_params
    fmt = params.fmt(q.get("format"), ("json", "csv"))
    dims = params.group(q.get("group"))
    start, end = params.day(q.get("from"), "from"), params.day(q.get("to"), "to")
    report = await service.consent_report(request.app.state.settings, site, start, end, dims)
    if fmt == "csv":
        return Response(
            rows.csv_table(report["columns"], report["rows"]),
            media_type="text/csv; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )
    return _json(report)


async def rights_report(request: Request) -> Response:
    site = _site(request)
    q = request.query_params
    fmt = params.fmt(q.get("format"), ("json", "csv"))
    year = params.year(q.get("year"))
    report = await service.rights_report(request.app.state.settings, site, year)
    if fmt == "csv":
        return Response(
            rows.csv_table(report["columns"], report["rows"]),
            media_type="text/csv; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )
    return _json(report)


async def verify(request: Request) -> Response:
    site = _site(request)
    since = params.when(request.query_params.get("since"), "since")
    report = await service.verify(request.app.state.settings, site, since)
    return _json({**report.as_json(), "problems": [p.as_json() for p in report.problems]})


_ASSETS = {
    "chart.umd.min.js": static_dir() / "vendor" / "chart.umd.min.js",
    "dashboard.js": static_dir() / "dashboard.js",
}


async def dashboard(request: Request) -> Response:
    authorize(request)
    site = request.query_params.get("site", "")
    if request.app.state.gateway.catalog.get(site) is None:
        raise NotFound("unknown_site", f"no site named {site[:64]!r}")
    settings = request.app.state.settings
    daily = await service.consent_report(settings, site, None, None, ("day", "banner_version"))
    regions = await service.consent_report(settings, site, None, None, ("region",))
    languages = await service.consent_report(settings, site, None, None, ("language",))
    year = datetime.now(UTC).year
    try:
        rights: dict[str, Any] | None = await service.rights_report(settings, site, year)
    except BadRequest:
        rights = None
    data = {"daily": daily, "regions": regions, "languages": languages}
    page = _PAGES.get_template("dashboard.html").render(
        site=site, base=f"/admin/v1/sites/{quote(site)}", daily=daily, regions=regions,
        languages=languages, rights=rights, year=year, data=_plain(data),
        csrf=session_csrf(request),
    )  # fmt: skip
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _plain(data: Any) -> Any:
    """Dates and the like as JSON-ready values (the page embeds the reports)."""
    return orjson.loads(orjson.dumps(data))


async def asset(request: Request) -> Response:
    """The dashboard's scripts: public code, no data (the vendored Chart.js and its caller)."""
    path = _ASSETS.get(request.path_params["name"])
    if path is None:
        raise NotFound("not_found", "no such asset")
    return Response(
        path.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[Route]:
    return [
        Route("/admin/v1/sites/{site}/export", export, methods=["GET"]),
        Route("/admin/v1/sites/{site}/subjects/{subject_id}/proof", proof, methods=["GET"]),
        Route("/admin/v1/sites/{site}/reports/consents", consent_report, methods=["GET"]),
        Route("/admin/v1/sites/{site}/reports/rights", rights_report, methods=["GET"]),
        Route("/admin/v1/sites/{site}/audit/verify", verify, methods=["GET"]),
        Route("/admin/dashboard", dashboard, methods=["GET"]),
        Route("/admin/assets/{name}", asset, methods=["GET"]),
    ]
