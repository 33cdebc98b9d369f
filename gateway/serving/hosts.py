"""Which Host header values may become a URL the gateway hands out (record_url).

A request's Host is the client's to choose: reflected into ``record_url``, it made the
snippet post visitors' choices to ``http://evil.example/…`` for anyone who could get a
response cached or served with that Host. Only a configured public host is used; any other
Host gets a relative URL, which never leaves the gateway's own origin.
"""

from __future__ import annotations

import ipaddress

from gateway.core.settings import Settings


def public_hosts(settings: Settings) -> frozenset[str]:
    """GATEWAY_PUBLIC_HOSTS, or else the bind address (and `localhost` on a loopback bind)."""
    if settings.public_hosts:
        return frozenset(h.strip().lower() for h in settings.public_hosts)
    port = settings.port
    hosts = {f"{settings.host.lower()}:{port}"}
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host.lower() == "localhost"
    if loopback:
        hosts |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    return frozenset(hosts)


def base_url(settings: Settings, allowed: frozenset[str], scheme: str, host: str | None) -> str:
    """The absolute base for URLs the gateway builds, or "" (relative) for an unlisted Host."""
    configured = settings.public_url.rstrip("/")
    if configured:
        return configured
    if host is not None and len(host) <= 300 and host.lower() in allowed:
        return f"{scheme}://{host}"
    return ""
