"""Typed errors carrying a user-facing message and a hint; the CLI and web edge format them."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    def __init__(self, message: str, *, hint: str = "", where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(GatewayError):
    """A setting, a site file, a template or a catalog is invalid."""


class GeoDatabaseError(ConfigError):
    """The configured GeoIP database is missing, corrupt or of an unsupported type."""


class BadRequest(GatewayError):
    """Client input that gets a 4xx JSON answer: ``{"error": code, "detail": message}``."""

    status_code = 400

    def __init__(self, code: str, detail: str, *, field: str = "", status_code: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.status_code = status_code


class NotFound(BadRequest):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail, status_code=404)


class Unavailable(GatewayError):
    """The gateway cannot take the request now (e.g. the outbox is full); retry later."""

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
