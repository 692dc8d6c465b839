"""Staff web pages: sign-in, the live device overview, the checkout page, receipts, the
managers' audit trail and kiosk pairing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from edge.accounts import authenticate
from edge.app.staff.auth import client_address, csrf, current_user, require_staff, start_session
from edge.app.staff.checkout import bp as checkout_bp
from edge.app.staff.kiosks import bp as kiosks_bp
from edge.app.staff.receipts import bp as receipts_bp
from edge.app.staff.sync import bp as sync_bp
from edge.app.staff.sync import sync_warning
from edge.audit import recent
from edge.scanners import list_scanners
from store_contract.web import local_path, page_headers
from store_contract.wording import device_name, local_time, moment

bp = Blueprint("staff", __name__, url_prefix="/staff", template_folder="templates",
               static_folder="static", static_url_path="/static")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        user = authenticate(current_app.extensions["edge"].store,
                            request.form.get("username", "").strip(),
                            request.form.get("password", ""), client_address())
        if user is not None:
            start_session(user)
            return redirect(local_path(request.args.get("next"), url_for("staff.devices")))
        error = ("Wrong username or password (after 5 wrong tries, this account cannot sign in "
                 "from this device for 5 minutes).")
    return render_template("login.html", error=error,
                           username=request.form.get("username", ""))


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("staff.login"))


@bp.get("/")
def home() -> Any:
    return redirect(url_for("staff.devices"))


@bp.get("/devices")
@require_staff("cashier")
def devices() -> Any:
    svc = current_app.extensions["edge"]
    return render_template("devices.html", user=current_user(), store=svc.settings,
                           scanners=svc.scans.tally.merge(list_scanners(svc.store)))


@bp.get("/audit")
@require_staff("manager")
def audit() -> Any:
    """Voids, reversals and reprints at the tills, newest first, with who did them."""
    svc = current_app.extensions["edge"]
    s = svc.settings
    entries = recent(svc.store)
    for entry in entries:
        entry["when"] = moment(datetime.fromisoformat(entry["at"]), s.zone, s.locale)
    return render_template("audit.html", user=current_user(), store=s, entries=entries)


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(checkout_bp)
    app.register_blueprint(receipts_bp)
    app.register_blueprint(sync_bp)
    app.register_blueprint(kiosks_bp)
    settings = app.extensions["edge"].settings

    def _local_time(when: Any, form: str = "moment") -> str:
        """`{{ job.created_at | local_time }}`: every time a staff page shows, in the store's
        zone and locale (wording.local_time)."""
        return local_time(when, settings.zone, settings.locale, form) if when else ""

    app.jinja_env.filters["local_time"] = _local_time
    app.jinja_env.filters["device_name"] = device_name

    @app.context_processor
    def _sync_banner() -> dict[str, Any]:
        if not request.path.startswith("/staff/") or current_user() is None:
            return {}
        return {"sync_warning": sync_warning()}

    @app.after_request
    def _headers(response: Response) -> Response:
        if not request.path.startswith("/staff"):
            return response
        return page_headers(response, cache=request.endpoint == "staff.static")

    @app.get("/")
    def root() -> Any:
        return redirect(url_for("staff.devices"))
