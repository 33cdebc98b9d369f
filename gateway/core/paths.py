"""The public HTTP API's URL templates: the one source for routes, the front and built URLs.

Starlette route syntax (``{site}``); ``url(TEMPLATE, site=…)`` fills one in.
"""

from __future__ import annotations

CONFIG = "/v1/sites/{site}/config"
BANNER = "/v1/sites/{site}/banner"
SNIPPET = "/v1/sites/{site}/consent.js"
PART = "/v1/sites/{site}/parts/{part}"  # the snippet's lazily loaded parts
SUBJECT = "/v1/sites/{site}/subjects/{subject_id}"
CONSENTS = "/v1/sites/{site}/consents"
PREFERENCES = "/v1/sites/{site}/preferences"
UNSUBSCRIBE_LINKS = "/v1/sites/{site}/unsubscribe-links"
UNSUBSCRIBE = "/v1/sites/{site}/unsubscribe/{token}"
SUBJECT_CONSENTS = "/v1/sites/{site}/subjects/{subject_id}/consents"
PRIVACY_CENTER = "/v1/sites/{site}/privacy-center"
GPC_JSON = "/.well-known/gpc.json"
TCF_SCRIPT = "/v1/sites/{site}/tcf.js"
IAB_STRINGS = "/v1/sites/{site}/iab-strings"


def url(template: str, **params: str) -> str:
    """A path from a template; values are used as they are (site ids are URL-safe)."""
    return template.format(**params)
