"""Who is calling: a staff session (pages) or HTTP Basic with staff credentials (scripts)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from edge.errors import Forbidden, Unauthorized
from edge.staff.accounts import StaffUser, authenticate, get_user

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
        user = authenticate(store, auth.username, auth.password)
        g.staff_via = "basic"
    elif session.get("staff"):
        user = get_user(store, session["staff"])
        g.staff_via = "session"
    g.staff_user = user
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
