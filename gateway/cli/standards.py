"""``consent-gateway tcf|gpp decode STRING`` and ``tcf|gpp encode`` (JSON on stdin).

The JSON uses the field names of IAB's reference libraries: iabtcf's ``TCModel`` for TC
strings, @iabgpp/cmpapi's section and field names for GPP strings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from gateway.core.settings import Settings
from gateway.sites.gvl_store import import_gvl
from gateway.standards import gpp, tcf
from gateway.standards.errors import InvalidModel
from gateway.standards.tcf_model import from_json, to_json

_WHAT = {"tcf": "IAB TCF v2.3 TC strings", "gpp": "IAB GPP strings"}


def add_parsers(sub: Any, add_settings: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``tcf`` and ``gpp`` commands on the CLI's subparsers (``tcf gvl import`` takes the
    settings flags: it writes beside the sites)."""
    for name, what in _WHAT.items():
        command = sub.add_parser(name, help=f"decode and encode {what}")
        actions = command.add_subparsers(dest=f"{name}_command", required=True)
        decode = actions.add_parser("decode", help="print the string's fields as JSON")
        decode.add_argument("string")
        decode.add_argument(
            "--lenient",
            action="store_true",
            help="also read strings that break the TCF v2.3 rules (e.g. no DisclosedVendors)",
        )
        actions.add_parser("encode", help="read the fields as JSON on stdin, print the string")
        if name == "tcf":
            gvl = actions.add_parser("gvl", help="the Global Vendor List snapshot the sites use")
            gvl_actions = gvl.add_subparsers(dest="gvl_command", required=True)
            load = gvl_actions.add_parser(
                "import", help="validate FILE (IAB Europe's vendor-list.json, GVL v3) and store it"
            )
            load.add_argument("file", type=Path)
            add_settings(load)


def run_gvl(settings: Settings, args: argparse.Namespace) -> list[str]:
    """``tcf gvl import FILE``: the lines to print."""
    gvl, target = import_gvl(settings.banners_dir, args.file)
    live = sum(1 for v in gvl.vendors.values() if not v.deleted)
    return [
        f"imported vendor list version {gvl.vendor_list_version} (lastUpdated "
        f"{gvl.last_updated.isoformat()}, TCF policy {gvl.tcf_policy_version}, {live} vendors, "
        f"{len(gvl.stacks)} stacks) into {target}",
        "running gateways pick it up on their next reload; run `consent-gateway check`",
    ]


def run(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin  # looked up per call, so tests can replace them
    stdout = stdout or sys.stdout
    kind = args.command
    if getattr(args, f"{kind}_command") == "decode":
        strict = not args.lenient
        value = (
            to_json(tcf.decode(args.string, strict=strict))
            if kind == "tcf"
            else (gpp.decode(args.string, strict=strict))
        )
        stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    try:
        data = orjson.loads(stdin.read())
    except orjson.JSONDecodeError as exc:
        codec = "tc" if kind == "tcf" else "gpp"
        raise InvalidModel(codec, "(stdin)", f"not JSON: {exc}") from None
    stdout.write((tcf.encode(from_json(data)) if kind == "tcf" else gpp.encode(data)) + "\n")
    return 0
