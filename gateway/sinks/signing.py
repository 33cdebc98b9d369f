"""The HMAC signature of webhook bodies (record batches and rights events).

Its own module, without the HTTP client: the rights service signs its events with it, and a
worker without a webhook should not import httpx for two constants and a function (issue
15, a worker's memory).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Consent-Signature"
TIMESTAMP_HEADER = "X-Consent-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
