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
import re
from dataclasses import dataclass
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

from edge.app.service import EdgeService
from edge.app.staff.auth import client_address, current_user, require_staff
from edge.approvals import APPROVAL_SECONDS, consume, grant, manager_required
from edge.audit import REPRINT, Actor
from edge.customers import find_by_hash
from edge.spool import Spool
from store_contract.customers import IdentifierError, normalise_card
from store_contract.errors import BadRequest
from store_contract.jws import MEMBER_TYP, TokenRejected, looks_like_jws
from store_contract.protocol import ID_RE
from store_contract.wording import local_time, money

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


# The list: each receipt with its sale (lane, total) and shopper; the name only for a shopper
# whose consent allows personalisation (as the paper itself: edge/receipts.py).
LISTED = ("SELECT j.job, j.device_id, j.txn, j.printer, j.state, j.reason, j.personalised, "
          "j.copy_of, j.attempts, j.created_at, j.updated_at, j.printed_at, t.total_minor, "
          "t.currency, c.id AS customer, c.display_name, c.consent "
          "FROM print_jobs j LEFT JOIN transactions t ON t.device_id = j.device_id "
          "AND t.txn = j.txn LEFT JOIN customers c ON c.id = COALESCE(j.customer_id, "
          "t.customer_id)")
# The last characters of a receipt number that find it: a receipt number (a UUIDv7) starts
# with the time, the same for every receipt of a minute, and ends at random.
JOB_END_MIN = 6
SEARCH_MAX = 600  # characters: a member code is a few hundred


@dataclass(frozen=True)
class Search:
    """What the search box found out about what was typed: a receipt number, or a shopper
    (by loyalty card or member code), and how to say it."""

    text: str
    numbers: tuple[str, ...] = ()   # receipt (job) ids or their start, and sale numbers
    customer: str | None = None     # the shopper's customer id
    identifier: str | None = None   # what a sale keeps for an unknown shopper's card/code
    said: str = ""                  # "Receipts of card …1234", for the page
    error: str | None = None


def _search(svc: EdgeService, text: str) -> Search:
    """Resolve the search box: a member code (a signed token: its subject), a loyalty-card
    number (any spacing; its look-up hash, as identify computes it), else a receipt or sale
    number. Nothing typed here is logged or put in a URL."""
    text = text.strip()[:SEARCH_MAX]
    # "Receipt 01a2…" copied from the paper's foot, or a sale number "s-12".
    text = re.sub(r"^(receipt|sale)\s*:?\s+", "", text, flags=re.IGNORECASE)
    if looks_like_jws(text):
        try:
            sub = svc.keys.verify(text, MEMBER_TYP).get("sub")
        except TokenRejected:
            return Search(text, error="That member code is not genuine (or is a coupon).")
        if not isinstance(sub, str) or not sub:
            return Search(text, error="That member code is not readable.")
        return Search(text, customer=sub, identifier=sub, said="Receipts of a member code")
    numbers = [text]
    try:
        card = normalise_card(text)
    except IdentifierError:
        card = None
    if card is not None:
        digest = svc.lookup.hash("card", card)
        found = find_by_hash(svc.store, "card", digest)
        return Search(text, numbers=tuple(numbers), customer=found.id if found else None,
                      identifier=digest, said=f"Receipts of card …{card[-4:]}")
    job = text.lower()
    if len(job) >= JOB_END_MIN and all(c in "0123456789abcdef-" for c in job):
        numbers.append(job)
    return Search(text, numbers=tuple(numbers), said="Receipt number")


def listed(svc: EdgeService, *, state: str | None = None, lane: str | None = None,
           search: Search | None = None, jobs: list[str] | None = None,
           limit: int = 100) -> list[dict[str, Any]]:
    """Receipts for the list, newest first, worded for staff."""
    where: list[str] = []
    args: list[Any] = []
    if state:
        where.append("j.state = ?")
        args.append(state)
    if lane:
        where.append("j.device_id = ?")
        args.append(lane)
    if jobs is not None:
        where.append(f"j.job IN ({', '.join('?' * len(jobs))})")
        args.extend(jobs)
    if search is not None:
        found = []
        for number in search.numbers:
            found.append("j.txn = ? OR j.job = ? OR (length(?) >= ? AND j.job LIKE '%' || ?)")
            args.extend([number, number, number, JOB_END_MIN, number])
        if search.customer:
            found.append("c.id = ?")
            args.append(search.customer)
        if search.identifier:
            found.append("t.identifier = ?")
            args.append(search.identifier)
        where.append("(" + (" OR ".join(found) or "0") + ")")
    sql = LISTED + (" WHERE " + " AND ".join(where) if where else "")
    rows = svc.store.query(sql + " ORDER BY j.created_at DESC, j.job DESC LIMIT ?",
                           (*args, limit))
    s = svc.settings
    out = []
    for row in rows:
        consent = json.loads(row.pop("consent") or "{}")
        name = row.pop("display_name")
        row["name"] = name if consent.get("personalised") else None
        row["identified"] = row.pop("customer") is not None
        row["total"] = money(row["total_minor"], row["currency"], s.locale) \
            if row["total_minor"] is not None and row["currency"] else None
        out.append(_worded(svc, Spool.described(row)))
    return out


@bp.route("/", methods=["GET", "POST"])
@require_staff("cashier")
def page() -> Any:
    """The list; the search box posts (a card number or member code stays out of URLs and
    the access log)."""
    svc = _service()
    state = request.args.get("state") or None
    if state not in (None, *STATES):
        state = None
    lane = request.args.get("lane") or None
    if lane is not None and not ID_RE.match(lane):
        lane = None
    search = None
    if request.method == "POST" and request.form.get("q", "").strip():
        search = _search(svc, request.form["q"])
    jobs = [] if search is not None and search.error else \
        listed(svc, state=state, lane=lane, search=search)
    return render_template("receipts.html", user=current_user(), store=svc.settings, jobs=jobs,
                           counts=svc.spool.counts(), state=state, lane=lane, states=STATES,
                           search=search)


@bp.get("/states")
@require_staff("cashier")
def states() -> Any:
    """The state of the receipts a page shows (`?job=…&job=…`), for its script to update
    them without a reload."""
    wanted = [j for j in request.args.getlist("job")[:PREVIEWS * 2]
              if 0 < len(j) <= 64 and all(c in "0123456789abcdef-" for c in j)]
    rows = listed(_service(), jobs=wanted, limit=len(wanted)) if wanted else []
    return jsonify({"jobs": {r["job"]: {"state": r["state"], "reason": r["reason_text"] or "",
                                        "printed": r.get("printed_when") or ""}
                             for r in rows},
                    "counts": _service().spool.counts()})


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
    row["when"] = local_time(datetime.fromtimestamp(row["created_at"], UTC), s.zone, s.locale)
    if row.get("printed_at"):
        row["printed_when"] = local_time(row["printed_at"], s.zone, s.locale)
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
