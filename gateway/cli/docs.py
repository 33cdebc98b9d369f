"""Regenerate the README's generated sections: `python -m gateway.cli.docs`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gateway.core.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def sections() -> dict[str, str]:
    from gateway.core.jurisdictions import load_rules, rule_table_markdown

    return {"settings": settings_table_markdown(), "rules": rule_table_markdown(load_rules())}


def render(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(
            rf"(<!-- generated:{name} -->\n).*?(\n<!-- /generated:{name} -->)", re.S
        )
        text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)  # type: ignore[misc]
    return text


def main() -> int:
    current = README.read_text(encoding="utf-8")
    updated = render(current)
    if "--check" in sys.argv:
        return 0 if updated == current else 1
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
