"""A setting's declaration (name, default, help, parser) and the parsers of GATEWAY_* values."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "GATEWAY_"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _int(raw: str) -> int:
    return int(raw.strip())


def _positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _float(raw: str) -> float:
    value = float(raw.strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _fraction(raw: str) -> float:
    value = float(raw.strip())
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _str(raw: str) -> str:
    return raw.strip()


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[str, ...]:
    items = _csv(raw)
    for item in items:
        ipaddress.ip_network(item, strict=False)
    return items


def _key(raw: str) -> str:
    value = raw.strip()
    if value and len(value.encode()) < 32:
        raise ValueError("must be at least 32 bytes, or empty")
    return value


def _keys(raw: str) -> tuple[str, ...]:
    values = _csv(raw)
    for value in values:
        _key(value)
    return values


def _workers(raw: str) -> int:
    value = raw.strip().lower()
    if value == "auto":
        return 0
    number = int(value)
    if number < 0:
        raise ValueError("expected auto, 0 (auto) or a positive number")
    return number


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = _str
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")
