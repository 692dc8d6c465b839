"""Who is calling: a staff session (pages) or HTTP Basic with staff credentials (scripts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from edge.accounts import StaffUser, authenticate, get_user
from store_contract.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])
csrf = CSRFProtect()


def current_user() -> StaffUser | None:
    """The signed-in staff member, from the session cookie or an Authorization: Basic header."""
    if "staff_user" in g:
        return cast(StaffUser | None, g.staff_user)
    store = current_app.extensions["edge"].store
    user = None
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username and auth.password:
        user = authenticate(store, auth.username, auth.password, client_address())
        g.staff_via = "basic"
    elif session.get("staff"):
        user = _session_user(store)
        g.staff_via = "session"
    g.staff_user = user
    return user


def client_address() -> str:
    """Who is signing in, for counting wrong passwords: the connection's address."""
    return request.remote_addr or "unknown"


def start_session(user: StaffUser) -> None:
    """Sign `user` in on this browser (a fresh session: nothing of the old one stays)."""
    session.clear()
    now = time.time()
    session.update(staff=user.username, epoch=user.session_epoch, since=now, seen=now)
    session.permanent = True


def _session_user(store: Any) -> StaffUser | None:
    """The session's user while the session holds: the account still exists with the same
    password (epoch), and neither the absolute nor the idle time has run out."""
    settings = current_app.extensions["edge"].settings
    user = get_user(store, session["staff"])
    now = time.time()
    since, seen = session.get("since", 0.0), session.get("seen", 0.0)
    if user is None or session.get("epoch") != user.session_epoch \
            or now - since > settings.staff_session_hours * 3600 \
            or now - seen > settings.staff_idle_minutes * 60:
        session.clear()
        return None
    if now - seen > 30:  # the cookie is sent again only when this moves
        session["seen"] = now
    return user


def require_staff(role: str) -> Callable[[F], F]:
    """Let through staff with at least `role`; pages redirect to the login, APIs answer 401."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                if request.path.startswith("/api/"):
                    raise Unauthorized("Sign in with a staff account (HTTP Basic or the staff "
                                       "login page).")
                # With the query: /staff/checkout?lane=lane-4 must come back to lane-4.
                return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))
            if not user.may(role):
                raise Forbidden(f"This needs a {role} account.")
            # Cookie sessions can be ridden by other sites; Basic auth cannot.
            if g.get("staff_via") == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
                csrf.protect()
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
