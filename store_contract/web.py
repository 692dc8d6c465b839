"""What the edge's staff pages and the hub's dashboard both do to stay pages of their own
site: where a sign-in may send the browser on to, and the headers every page carries.

One rule for both, written here once (docs/operations.md, "Securing the store LAN"). It
needs Flask, which the `edge` and `hub` installs have and a lane client's does not.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

# A path on this site: one "/" and then anything but a second "/" or "\" (browsers read
# "//host", "/\host" and "\\host" as another site), with no whitespace or control characters
# anywhere (browsers drop tabs and newlines, so "/\t/evil" would become "//evil").
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\x00-\x20\x7f]*\Z")
# The same rule for what the target says once percent-decoded ("/%2F/evil" is "///evil"),
# where a space is only an encoded space in a query.
_DECODED_PATH = re.compile(r"/(?![/\\])[^\\\x00-\x1f\x7f]*\Z")
_MAX_TARGET = 2048
_DECODE_ROUNDS = 3  # a target encoded more deeply than this is not worth trusting

# Pages load only what the site itself serves; nobody may frame them (clickjacking).
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def local_path(target: str | None, fallback: str) -> str:
    """`target` when it is a path on this site, by the rule above, and stays one however
    often it is percent-decoded; otherwise `fallback`. For "after signing in, go to …"."""
    if not target or len(target) > _MAX_TARGET:
        return fallback
    if not _LOCAL_PATH.match(target):
        return fallback
    seen = target
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(seen)
        if decoded == seen:
            return target
        if not _DECODED_PATH.match(decoded):
            return fallback
        seen = decoded
    return fallback


def page_headers(response: Response, *, cache: bool = False) -> Response:
    """The headers of every staff or manager page: the CSP above, no MIME sniffing, no
    referrer to other sites, and no caching unless `cache` (static files only: pages and
    receipt images hold personal data)."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


class _SecureWhenHttps(SecureCookieSessionInterface):
    """The session cookie is `Secure` whenever the page came over HTTPS (directly or through
    the trusted proxy), so a browser never sends it back over plain HTTP."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or bool(super().get_cookie_secure(app))


def session_cookies(app: Flask) -> None:
    """Session cookies as both sites send them: HttpOnly and SameSite always, Secure on
    HTTPS."""
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = _SecureWhenHttps()


def proxy_options(trusted_proxy: str) -> dict[str, Any]:
    """waitress options for a TLS proxy at `trusted_proxy` (empty: none). Only that peer's
    X-Forwarded-Proto and X-Forwarded-For count (the page is HTTPS; the client's address, for
    sign-in throttling and logs); from anyone else those headers are dropped."""
    if not trusted_proxy:
        return {}
    return {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1,
            "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-for"},
            "clear_untrusted_proxy_headers": True}


# A stream lasts a minute (the page's EventSource opens the next); a comment line every few
# seconds is how the server finds a closed page and frees its thread and its place.
STREAM_S = 60.0
KEEPALIVE_S = 5.0


def scan_stream(next_item: Callable[[float], Mapping[str, Any] | None],
                leave: Callable[[], None], *, seconds: float = STREAM_S,
                keepalive: float = KEEPALIVE_S,
                shape: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict) -> Response:
    """A page's live scans as server-sent events: `event: ready` first, then one
    `event: scan` per item `next_item(timeout)` gives (as `shape` makes it), a comment line
    every `keepalive` seconds, for `seconds` (the page's EventSource opens it again);
    `leave()` when it ends, however it ends (`next_item` raising EOFError ends it). The
    data is ASCII-only JSON: no line break or control character of a code can end an event
    early or reach the page other than as data."""

    def stream() -> Iterator[str]:
        try:
            yield "retry: 1000\nevent: ready\ndata: {}\n\n"
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                try:
                    item = next_item(min(keepalive, left))
                except EOFError:  # closed from the other side: a newer page took over
                    return
                if item is None:
                    yield ": still here\n\n"
                    continue
                yield f"event: scan\ndata: {json.dumps(shape(item), separators=(',', ':'))}\n\n"
        finally:
            leave()

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
