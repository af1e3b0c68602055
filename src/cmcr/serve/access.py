"""Who may use a ``cmcr serve``: with ``--token``, every API, media and metrics request must
carry it as ``Authorization: Bearer TOKEN`` (else 401); the page and its static files load
without it, and the page asks for the token once.

An ``<img>`` or ``<audio>`` element cannot send a header, so the media URLs in search results
carry a signature instead: ``/media/ROW?sig=S``, S = HMAC-SHA256(token, "media:ROW") (first 32 hex
digits). It opens that row's file and thumbnails only; a new token voids every old URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from typing import Any
from urllib.parse import parse_qs

from cmcr.errors import ConfigError

MIN_TOKEN_CHARS = 12
GUARDED_PREFIXES = ("/api/", "/media/", "/metrics")
MEDIA_ROW = re.compile(r"^/media/(\d{1,18})$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, and tokens too short to be one."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"--token must have at least {MIN_TOKEN_CHARS} characters, got "
                          f"{len(token)}; make one with: python -c \"import secrets; "
                          "print(secrets.token_urlsafe())\"")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} can be reached from other machines: give a token "
                          "(--token TOKEN, or the CMCR_TOKEN environment variable) that every "
                          "API and media request must carry, or serve on 127.0.0.1")


def media_signature(token: str, row: int) -> str:
    return hmac.new(token.encode(), f"media:{row}".encode(), hashlib.sha256).hexdigest()[:32]


class TokenGuard:
    """ASGI middleware: 401 for a guarded request without the bearer token (or, for
    ``/media/ROW``, without that row's signature)."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GUARDED_PREFIXES) \
                and not self.allowed(scope):
            return await unauthorised(send)
        await self.app(scope, receive, send)

    def allowed(self, scope: dict) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        given = header.decode("latin-1")
        if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return True
        row = MEDIA_ROW.match(scope["path"])
        if row is None:
            return False
        signatures = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sig", [])
        expected = media_signature(self.token, int(row.group(1)))
        return len(signatures) == 1 and hmac.compare_digest(signatures[0].encode(),
                                                            expected.encode())


async def unauthorised(send: Any) -> None:
    body = json.dumps({"error": "this server needs its token: send 'Authorization: Bearer "
                                "TOKEN' (the page asks for it)"}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="cmcr"')]})
    await send({"type": "http.response.body", "body": body})
