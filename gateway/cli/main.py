"""The command line: the only place that prints or exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.cli.standards import add_parsers as add_standards_parsers
from gateway.cli.standards import run as run_standards
from gateway.cli.standards import run_gvl
from gateway.core.errors import GatewayError
from gateway.core.settings import Settings, load_settings
from gateway.core.settings_table import SETTINGS

if TYPE_CHECKING:
    import uvicorn

    from gateway.recording.outboxes import WorkerRole


def _add_settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flag > GATEWAY_* environment > default)")
    for s in SETTINGS:
        default = s.default or "empty"
        group.add_argument(
            s.flag,
            dest=s.name,
            default=None,
            metavar=s.name.upper(),
            help=f"{s.help} [{s.env}, default: {default}]",
        )


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return load_settings(overrides=overrides)


def command_settings(argv: Sequence[str]) -> Settings:
    """The settings ``consent-gateway <argv>`` runs with (flags, then ``GATEWAY_*``
    variables, then defaults): what a harness that builds the app itself measures."""
    return _settings(_parser().parse_args(list(argv)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-gateway",
        description="Geo- and language-aware consent banners and durable consent records.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway with uvicorn")
    _add_settings(serve)

    check = sub.add_parser("check", help="validate settings, sites, templates and catalogs")
    _add_settings(check)

    get = sub.add_parser("get", help="request PATH in-process and print the response")
    get.add_argument("path")
    get.add_argument("-H", "--header", action="append", default=[], help="Name: value")
    _add_settings(get)

    geo = sub.add_parser("geo", help="the embedded country database")
    geo_sub = geo.add_subparsers(dest="geo_command", required=True)
    build = geo_sub.add_parser("build", help="build data/geo/country.mmdb from tor-geoipdb")
    build.add_argument("--source", type=Path, default=Path("/usr/share/tor"))
    build.add_argument("--output", type=Path, default=None)
    build.add_argument("--if-missing", action="store_true", help="skip if it exists")
    _add_settings(build)

    outbox = sub.add_parser("outbox", help="the local outbox of records to forward")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    for name, text in (
        ("status", "depth, age and dead letters"),
        ("replay", "move dead letters back for delivery"),
    ):
        _add_settings(outbox_sub.add_parser(name, help=text))

    versions = sub.add_parser("versions", help="list the published versions of a site")
    versions.add_argument("site")
    _add_settings(versions)

    keys = sub.add_parser("keys", help="per-site API keys for server-to-server calls")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key; it is printed once, last line")
    create.add_argument("site")
    create.add_argument("--name", default="api", help="who or what uses it (e.g. crm)")
    create.add_argument("--scope", action="append", default=[], help="repeatable; default: all")
    listing = keys_sub.add_parser("list", help="keys with id, site, status and scopes")
    listing.add_argument("site", nargs="?", default=None)
    revoke = keys_sub.add_parser("revoke", help="refuse a key from now on (within seconds)")
    revoke.add_argument("key_id")
    for cmd in (create, listing, revoke):
        _add_settings(cmd)

    audit = sub.add_parser("audit", help="the audit trail's hash chain")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="walk the chain; exit 2 at a broken link")
    verify.add_argument("--site", default=None)
    verify.add_argument("--since", default=None, help="YYYY-MM-DD or an RFC 3339 time")
    _add_settings(verify)
    _add_settings(audit_sub.add_parser("checkpoint", help="sign the chain heads into the store"))

    store = sub.add_parser("store", help="the central store (PostgreSQL)")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    retention = store_sub.add_parser(
        "retention", help="drop whole months of records older than a period, keeping what it needs"
    )
    retention.add_argument(
        "--older-than", required=True, help="400d, 13m (calendar months), 2y, or YYYY-MM-DD"
    )
    retention.add_argument(
        "--dry-run", action="store_true", help="say what would go; change nothing"
    )
    _add_settings(retention)

    export = sub.add_parser("export", help="stream a site's records as CSV or JSON Lines")
    export.add_argument("site")
    export.add_argument("--from", dest="start", default=None)
    export.add_argument("--to", dest="end", default=None)
    export.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    export.add_argument("--output", type=Path, default=None, help="default: stdout")
    for name in ("region", "rule", "channel", "action"):
        export.add_argument(f"--{name}", default=None)
    _add_settings(export)
    rights = sub.add_parser("rights", help="the rights-request queue")
    rights_sub = rights.add_subparsers(dest="rights_command", required=True)
    r_list = rights_sub.add_parser("list", help="requests, newest first")
    r_list.add_argument("site", nargs="?", default=None)
    r_list.add_argument("--type", default=None)
    r_list.add_argument("--state", action="append", default=[], help="repeatable")
    r_list.add_argument("--overdue", action="store_true", help="open requests past due only")
    r_show = rights_sub.add_parser("show", help="a request with its transitions and systems")
    r_show.add_argument("request_id")
    r_done = rights_sub.add_parser("complete", help="close as done (every required part done)")
    r_deny = rights_sub.add_parser("deny", help="refuse, saying why")
    for cmd in (r_done, r_deny):
        cmd.add_argument("request_id")
        cmd.add_argument("--reason", default="", required=cmd is r_deny)
    r_erase = rights_sub.add_parser(
        "erase-reasons",
        help="erase the free-text reasons of requests (they may name the requester); the "
        "audit chain keeps verifying",
    )
    r_erase.add_argument("request_id", nargs="+")
    for cmd in (r_list, r_show, r_done, r_deny, r_erase):
        _add_settings(cmd)

    i18n = sub.add_parser("i18n", help="gettext workflow over locales/")
    i18n_sub = i18n.add_subparsers(dest="i18n_command", required=True)
    for name, text in (
        ("extract", "write locales/<site>.pot from templates and site.toml"),
        ("init", "start a catalog for a new locale"),
        ("update", "merge the template into every catalog"),
        ("compile", "compile .po files to .mo"),
    ):
        cmd = i18n_sub.add_parser(name, help=text)
        cmd.add_argument("--site", default=None, help="one site (default: all)")
        if name == "init":
            cmd.add_argument("--locale", required=True)
        _add_settings(cmd)
    add_standards_parsers(sub, _add_settings)
    return parser


def _serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from gateway.cli import workers

    prepare_serving(settings)
    count = workers.worker_count(settings.workers)
    if count > 1:  # a supervisor forks the workers, each runs _run_server on its socket
        return workers.supervise(settings, count, _run_server)
    return _run_server(settings)


def prepare_serving(settings: Settings) -> None:
    """What `serve` does in its process before it serves (bench.protocol does the same)."""
    from gateway.app import build_gateway
    from gateway.core.malloc import pin_mmap_threshold
    from gateway.web import accesslog

    pin_mmap_threshold(settings.malloc_mmap_threshold)  # before any thread or fork
    build_gateway(settings).locator.close()  # fail fast, with a one-line error, before binding
    accesslog.configure_output()  # GATEWAY_ACCESS_LOG's JSON lines, on stdout (every worker)


def _run_server(
    settings: Settings, worker: WorkerRole | None = None, sock: socket.socket | None = None
) -> int:
    """uvicorn serving the app: on ``settings``' host and port, or on a worker's socket."""
    import uvicorn

    server = uvicorn.Server(server_config(settings, worker))
    server.run(sockets=None if sock is None else [sock])
    return 0 if server.started else 3  # 3: start-up failed, as uvicorn.run says


def server_config(settings: Settings, worker: WorkerRole | None = None) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs the app with (bench.protocol drives the same)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.web import connections

    return uvicorn.Config(
        create_app(settings, serving=True, worker=worker),
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level,
        # uvicorn's own access log cost about half the serving throughput, and logged the
        # client's address: the gateway's (gateway/web/accesslog.py) replaces it.
        access_log=False,
        loop="uvloop",  # what bench/ measures (and uvicorn's "auto" picks when installed)
        timeout_graceful_shutdown=int(settings.shutdown_drain) + 5,
        # Head and body timeouts, the connection cap and the keep-alive timeout.
        **connections.server_options(settings),
    )


def _print_check(settings: Settings) -> int:
    from gateway.cli.checks import run_checks

    report = run_checks(settings)
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def _get(settings: Settings, path: str, headers: Sequence[str]) -> int:
    from starlette.testclient import TestClient

    from gateway.app import create_app

    pairs = dict(h.split(":", 1) for h in headers if ":" in h)
    with TestClient(create_app(settings.replace(reload=False))) as client:
        response = client.get(path, headers={k.strip(): v.strip() for k, v in pairs.items()})
    print(response.status_code, response.headers.get("content-type", ""), file=sys.stderr)
    sys.stdout.write(response.text)
    return 0 if response.status_code < 400 else 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("tcf", "gpp") and getattr(args, "tcf_command", "") != "gvl":
        return run_standards(args)  # pure codecs: no settings to load
    settings = _settings(args)
    if args.command == "tcf":
        for line in run_gvl(settings, args):
            print(line)
        return 0
    if args.command == "serve":
        return _serve(settings)
    if args.command == "check":
        return _print_check(settings)
    if args.command == "get":
        return _get(settings, args.path, args.header)
    if args.command == "geo":
        from gateway.geo.build import run_build

        stats = run_build(settings, args.source, args.output, args.if_missing)
        print("geo database is up to date" if stats is None else str(stats))
        return 0
    if args.command == "outbox":
        from gateway.recording.outbox.commands import outbox_replay, outbox_status

        if args.outbox_command == "status":
            _print_mapping(asyncio.run(outbox_status(settings)))
        else:
            print(f"replayed {asyncio.run(outbox_replay(settings))} dead letter(s)")
        return 0
    if args.command == "versions":
        from gateway.sites.versions import list_versions

        for line in asyncio.run(list_versions(settings, args.site)):
            print(line)
        return 0
    if args.command == "keys":
        from gateway.cli import keys

        if args.keys_command == "create":
            lines = asyncio.run(keys.create(settings, args.site, args.name, args.scope))
        elif args.keys_command == "list":
            lines = asyncio.run(keys.list_keys(settings, args.site))
        else:
            lines = asyncio.run(keys.revoke(settings, args.key_id))
        for line in lines:
            print(line)
        return 0
    if args.command == "audit":
        from gateway.cli import audit as audit_cli

        if args.audit_command == "verify":
            return asyncio.run(audit_cli.verify(settings, args.site, args.since))
        return asyncio.run(audit_cli.checkpoint(settings))
    if args.command == "store":
        from gateway.cli import store as store_cli

        return asyncio.run(store_cli.retention(settings, args.older_than, args.dry_run))
    if args.command == "export":
        from gateway.cli import audit as audit_cli

        wanted = {n: getattr(args, n) for n in ("region", "rule", "channel", "action")}
        found = {k: v for k, v in wanted.items() if v}
        return asyncio.run(
            audit_cli.export(
                settings, args.site, args.start, args.end, args.format, found, args.output
            )
        )
    if args.command == "rights":
        from gateway.cli import rights

        if args.rights_command == "list":
            lines = asyncio.run(
                rights.list_requests(settings, args.site, args.type, args.state, args.overdue)
            )
        elif args.rights_command == "show":
            lines = asyncio.run(rights.show(settings, args.request_id))
        elif args.rights_command == "erase-reasons":
            lines = asyncio.run(rights.erase_reasons(settings, args.request_id))
        else:
            lines = asyncio.run(
                rights.act(settings, args.rights_command, args.request_id, args.reason)
            )
        for line in lines:
            print(line)
        return 0
    if args.command == "i18n":
        from gateway.sites import i18n_workflow

        for line in i18n_workflow.run(
            settings, args.i18n_command, args.site, getattr(args, "locale", None)
        ):
            print(line)
        return 0
    raise AssertionError(args.command)


def _print_mapping(data: dict[str, Any]) -> None:
    for key, value in data.items():
        print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except GatewayError as exc:
        print(f"consent-gateway: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `consent-gateway check | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
