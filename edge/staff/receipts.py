"""Staff receipts page: recent receipts, their state, a preview, and Reprint.

The preview is drawn from the job's stored document by the same renderer the printer
service uses (ESC/POS bytes, then the virtual printer's raster), so what staff see is
what the paper shows, for the printer's own profile.

Reprinting and copying a receipt needs a manager: a manager signed in, or a manager's
approval typed into the page's dialog (`/approve`), good for one reprint of that receipt
(docs/operations.md §16.3). Every reprint is in the audit trail.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from edge.audit import REPRINT, Actor
from edge.errors import BadRequest
from edge.protocol import ID_RE
from edge.service import EdgeService
from edge.staff.approvals import APPROVAL_SECONDS, consume, grant, manager_required
from edge.staff.auth import client_address, current_user, require_staff
from edge.wording import moment

T = TypeVar("T")
bp = Blueprint("receipts", __name__, url_prefix="/staff/receipts")

STATES = ("queued", "sending", "held", "printed", "failed")
PREVIEWS = 64


@lru_cache(maxsize=PREVIEWS)
def _preview_png(document: str, profile: str) -> bytes:
    """A receipt drawn for a printer profile; cached, as a written document never changes."""
    from pos_bridge.receipt_render import render_png

    return render_png(json.loads(document), profile)


def _service() -> EdgeService:
    svc: EdgeService = current_app.extensions["edge"]
    return svc


def _job(job: str) -> str:
    # Job ids are uuid7 text: 36 characters of hex and '-'.
    if not (0 < len(job) <= 64 and all(c in "0123456789abcdef-" for c in job)):
        abort(404)
    return job


def _found(value: T | None) -> T:
    if value is None:
        abort(404)
    return value


@bp.get("/")
@require_staff("cashier")
def page() -> Any:
    svc = _service()
    state = request.args.get("state") or None
    if state not in (None, *STATES):
        state = None
    lane = request.args.get("lane") or None
    if lane is not None and not ID_RE.match(lane):
        lane = None
    jobs = [_worded(svc, j) for j in svc.spool.recent(100, state=state, lane=lane)]
    return render_template("receipts.html", user=current_user(), store=svc.settings, jobs=jobs,
                           counts=svc.spool.counts(), state=state, lane=lane, states=STATES)


@bp.get("/<job>")
@require_staff("cashier")
def detail(job: str) -> Any:
    svc = _service()
    row = _found(svc.spool.job(_job(job)))
    return render_template("receipt.html", user=current_user(), store=svc.settings,
                           job=_worded(svc, row))


def _worded(svc: EdgeService, row: dict[str, Any]) -> dict[str, Any]:
    """Times in the store's zone, as staff read them."""
    s = svc.settings
    row["when"] = moment(datetime.fromtimestamp(row["created_at"], UTC), s.zone, s.locale)
    if row.get("printed_at"):
        row["printed_when"] = moment(datetime.fromisoformat(row["printed_at"]), s.zone,
                                     s.locale)
    return row


@bp.get("/<job>.png")
@require_staff("cashier")
def preview(job: str) -> Response:
    document, profile = _found(_service().spool.document(_job(job)))
    response = Response(_preview_png(document, profile or "default"), mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _lane_of(svc: EdgeService, job: str) -> str:
    row = _found(svc.spool.job(job))
    return str(row["device_id"])


@bp.post("/<job>/approve")
@require_staff("cashier")
def approve(job: str) -> Response:
    """A manager approves one reprint of this receipt on a cashier's screen (JSON, as the
    checkout's approval): their user name and password, checked as a sign-in is."""
    svc, user = _service(), current_user()
    assert user is not None
    lane = _lane_of(svc, _job(job))
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username.strip():
        raise BadRequest("The manager types their user name and password.",
                         detail={"field": "username"})
    approval = grant(svc.store, username, password, client_address(), for_user=user.username,
                     action=REPRINT, lane=lane, target=job)
    return jsonify({"approval": approval.id, "manager": approval.manager,
                    "expires_in_s": APPROVAL_SECONDS})


@bp.post("/<job>/reprint")
@require_staff("cashier")
def reprint(job: str) -> Any:
    svc, user = _service(), current_user()
    assert user is not None
    lane = _lane_of(svc, _job(job))
    approved_by = None
    if user.role != "manager":
        approval = request.form.get("approval")
        if not approval:
            raise manager_required("Reprinting or copying a receipt needs a manager. Ask a "
                                   "manager to approve on this screen.", job=job)
        approved_by = consume(svc.store, approval, for_user=user.username, action=REPRINT,
                              lane=lane, target=job)
    actor = Actor(user.username, "staff", approved_by, manager=user.role == "manager")
    try:
        new_job = svc.spool.reprint(job, actor)
    except BadRequest as exc:
        flash(exc.message, "error")
        return redirect(url_for("receipts.detail", job=job))
    flash("Sent to the printer again." if new_job == job else
          "A new receipt was sent to the printer.", "ok")
    return redirect(url_for("receipts.detail", job=new_job))
