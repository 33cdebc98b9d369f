"""Typed errors of the TC and GPP codecs; both answer 400 at the web edge, one line in the CLI."""

from __future__ import annotations

from gateway.core.errors import BadRequest


class MalformedString(BadRequest):
    """A TC or GPP string that does not follow its specification."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"malformed_{kind}_string", f"{kind.upper()} string: {detail}")


class InvalidModel(BadRequest):
    """Decoded values (JSON) that cannot be encoded: a wrong type, a value out of range."""

    def __init__(self, kind: str, field: str, detail: str) -> None:
        super().__init__(f"invalid_{kind}_model", f"{field}: {detail}", field=field)
