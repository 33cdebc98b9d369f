"""Request tokens, one-time e-mail codes and signed download links. Pure: no I/O.

- A request token (``rrt_<secret>``) is shown once, when the request is made; the store keeps
  its SHA-256 (256 random bits need no slow hash). It lets its holder verify and follow the
  request, nothing else.
- A one-time code is 8 digits, stored as an HMAC under the deployment's rights key bound to
  the request id: a copy of the store does not reveal codes, and a code of one request is
  worthless for another. With 10^8 codes and MAX_ATTEMPTS tries, a guess succeeds with
  probability 5e-8 per request.
- A download link carries the request id and an expiry, signed with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

CODE_DIGITS = 8
MAX_ATTEMPTS = 5
CODE_TTL = 15 * 60  # seconds
DOWNLOAD_TTL = 7 * 24 * 3600
_TOKEN = re.compile(r"^rrt_[A-Za-z0-9_-]{43}$")
_CODE = re.compile(rf"^[0-9]{{{CODE_DIGITS}}}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")


def new_token() -> tuple[str, str]:
    """(the token to hand out, the hash to store)."""
    token = "rrt_" + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant time; a malformed token is compared too, so it takes the same time."""
    well_formed = bool(_TOKEN.fullmatch(token))
    return hmac.compare_digest(token_hash(token[:64]), stored_hash) and well_formed


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(key: bytes, request_id: str, code: str) -> str:
    return hmac.new(key, f"code\0{request_id}\0{code}".encode(), hashlib.sha256).hexdigest()


def code_matches(key: bytes, request_id: str, code: str, stored_hash: str) -> bool:
    well_formed = bool(_CODE.fullmatch(code))
    given = code_hash(key, request_id, code[:CODE_DIGITS] if well_formed else "x")
    return hmac.compare_digest(given, stored_hash) and well_formed


def sign_download(key: bytes, request_id: str, expires: int) -> str:
    message = f"download\0{request_id}\0{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def download_ok(key: bytes, request_id: str, expires: str, signature: str, now: int) -> bool:
    """Whether a link's signature is genuine and it has not expired."""
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    if not _SIG.fullmatch(signature):
        return False
    expected = sign_download(key, request_id, int(expires))
    return hmac.compare_digest(expected, signature) and int(expires) > now


def system_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Consent-Signature`` a downstream system sends with its confirmation: the same
    scheme as the webhook sink's (HMAC-SHA256 of ``<timestamp>.<body>``)."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
