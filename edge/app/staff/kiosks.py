"""Staff page for kiosks: which are paired, and pairing or unpairing each one
(docs/kiosk.md, "Enrolment and pairing"). Managers only: a paired browser shows shoppers'
data, so pairing one is as weighty as a reprint."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from edge.app.staff.auth import current_user, require_staff
from edge.kiosks import list_kiosks, pair_kiosk, unpair_kiosk
from store_contract.errors import EdgeError

bp = Blueprint("kiosks", __name__, url_prefix="/staff/kiosks")


def _page(error: str | None = None, status: int = 200, kiosk: str | None = None) -> Any:
    svc = current_app.extensions["edge"]
    return render_template("kiosks.html", user=current_user(), store=svc.settings,
                           kiosks=list_kiosks(svc.store), error=error,
                           error_kiosk=kiosk), status


@bp.get("/")
@require_staff("manager")
def page() -> Any:
    return _page()


def _act(kiosk_id: str, action: Any, done: str) -> Any:
    """Run `action` for the signed-in manager; the page again with the refusal (and its
    status), or back to the list with `done`."""
    user = current_user()
    assert user is not None
    try:
        action(current_app.extensions["edge"].store, kiosk_id, user.username)
    except EdgeError as exc:
        return _page(exc.message, exc.status, kiosk_id)
    flash(done, "ok")
    return redirect(url_for("kiosks.page"))


@bp.post("/<kiosk_id>/pair")
@require_staff("manager")
def pair(kiosk_id: str) -> Any:
    code = request.form.get("code", "")
    return _act(kiosk_id, lambda store, k, by: pair_kiosk(store, k, code, by),
                f"Kiosk {kiosk_id} is paired: its screen moves on within a few seconds.")


@bp.post("/<kiosk_id>/unpair")
@require_staff("manager")
def unpair(kiosk_id: str) -> Any:
    return _act(kiosk_id, unpair_kiosk,
                f"Kiosk {kiosk_id} is unpaired: its browser is back at the pairing screen.")

