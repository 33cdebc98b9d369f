"""``consent-gateway tcf|gpp decode STRING`` and ``tcf|gpp encode`` (JSON on stdin).

The JSON uses the field names of IAB's reference libraries: iabtcf's ``TCModel`` for TC
strings, @iabgpp/cmpapi's section and field names for GPP strings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import orjson

from gateway.standards import gpp, tcf
from gateway.standards.errors import InvalidModel
from gateway.standards.tcf_model import from_json, to_json

_WHAT = {"tcf": "IAB TCF v2.3 TC strings", "gpp": "IAB GPP strings"}


def add_parsers(sub: Any) -> None:
    """The ``tcf`` and ``gpp`` commands on the CLI's subparsers."""
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
