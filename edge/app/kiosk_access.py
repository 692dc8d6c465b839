"""The kiosk browser's way in: the pairing screen, the kiosk credential cookie, and the
guard in front of every kiosk page (docs/kiosk.md, "Enrolment and pairing").

A kiosk's browser opens `/kiosk/`. Without a credential it is sent to `/kiosk/pair`, which
shows a one-time code and polls `/kiosk/pair/status` until a manager has entered the code;
that poll sets the credential cookie and sends the browser to `/kiosk/ID/`. From then on
`current_kiosk()` names the kiosk, and every page under `/kiosk/ID/...` is refused unless
it is that kiosk's: the kiosk pages (`kiosk_ui`) get a kiosk that is already checked. The
credential is nothing else: staff pages, `/api/v1` and the broker know nothing of it.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from edge import kiosks
from edge.kiosks import (
    CODE_VALID_S,
    PICKUP_S,
    RESERVED_IDS,
    Kiosk,
    format_code,
    kiosk_for_credential,
    pairing_state,
    start_pairing,
)
from store_contract.errors import Forbidden, Unauthorized
from store_contract.web import page_headers
from store_contract.wording import local_time

R = TypeVar("R", bound=BaseResponse)
KIOSK_COOKIE = "kiosk"
PAIRING_COOKIE = "kiosk_pairing"
# Chromium keeps no cookie longer than 400 days; the kiosk renews it each time it opens
# /kiosk/ (at every start of its browser).
CREDENTIAL_DAYS = 400
_KIOSK_PAGE = re.compile(r"/kiosk/(?P<kiosk>[^/]+)(?:/|\Z)")

bp = Blueprint("kiosk_access", __name__, url_prefix="/kiosk",
               template_folder="kiosk_pair/templates", static_folder="kiosk_pair/static",
               static_url_path="/pair/static")


def current_kiosk() -> Kiosk | None:
    """The kiosk whose credential this request carries (its `kiosk` cookie); None without
    one, or with one no enrolled kiosk holds now (forged, replaced, unpaired, removed)."""
    # Kept under a name of its own: the kiosk pages keep what they make of it in g.kiosk.
    if "kiosk_credential" not in g:
        token = request.cookies.get(KIOSK_COOKIE, "")
        g.kiosk_credential = kiosk_for_credential(current_app.extensions["edge"].store,
                                                  token) if token else None
    return cast(Kiosk | None, g.kiosk_credential)


def _set_credential(response: R, token: str) -> R:
    response.set_cookie(KIOSK_COOKIE, token, max_age=CREDENTIAL_DAYS * 86400, path="/kiosk",
                        httponly=True, samesite="Strict", secure=request.is_secure)
    return response


def _kiosk_home(kiosk_id: str) -> str:
    return f"/kiosk/{kiosk_id}/"


@bp.get("/")
def index() -> Any:
    """Where a kiosk's browser starts: its kiosk's pages, or the pairing screen."""
    kiosk = current_kiosk()
    if kiosk is None:
        return redirect(url_for("kiosk_access.pair"))
    # Sent again, so a kiosk that is restarted now and then never reaches the cookie's end.
    return _set_credential(redirect(_kiosk_home(kiosk.id)),
                           request.cookies.get(KIOSK_COOKIE, ""))


@bp.get("/pair")
def pair() -> Any:
    """The pairing screen: a new one-time code for this browser, bound to it by the
    pairing cookie (any code it showed before is void)."""
    kiosk = current_kiosk()
    if kiosk is not None:
        return redirect(_kiosk_home(kiosk.id))
    svc = current_app.extensions["edge"]
    old = request.cookies.get(PAIRING_COOKIE)
    picked = _picked_up(old)
    if picked is not None:
        return picked
    browser, code = start_pairing(svc.store, replaces=old)
    s = svc.settings
    until = local_time(kiosks._clock() + CODE_VALID_S, s.zone, s.locale, "clock")
    response = make_response(render_template(
        "kiosk_pair.html", code=format_code(code), store=s, until=until,
        minutes=CODE_VALID_S // 60))
    response.set_cookie(PAIRING_COOKIE, browser, max_age=CODE_VALID_S + PICKUP_S,
                        path="/kiosk/pair", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return response


def _picked_up(browser: str | None) -> BaseResponse | None:
    """The credential, when a manager has entered this browser's code since its last poll."""
    state = pairing_state(current_app.extensions["edge"].store, browser)
    if state.credential is None or state.kiosk is None:
        return None
    response = _set_credential(redirect(_kiosk_home(state.kiosk)), state.credential)
    response.delete_cookie(PAIRING_COOKIE, path="/kiosk/pair")
    return response


@bp.get("/pair/status")
def pair_status() -> Any:
    """Polled by the pairing screen: `waiting`, `paired` (with `go`, the kiosk's page, and
    the credential cookie the first time), `expired` or `unknown` (show a new code)."""
    state = pairing_state(current_app.extensions["edge"].store,
                          request.cookies.get(PAIRING_COOKIE))
    body: dict[str, Any] = {"state": state.state}
    if state.kiosk is not None:
        body["go"] = _kiosk_home(state.kiosk)
    if state.expires_at is not None:
        body["expires_in_s"] = max(0, int(state.expires_at - kiosks._clock()))
    response = jsonify(body)
    if state.credential is not None:
        _set_credential(response, state.credential)
        response.delete_cookie(PAIRING_COOKIE, path="/kiosk/pair")
    return response


def _guard() -> Any:
    """Before any page under /kiosk/ID/: only the browser paired with kiosk ID gets in.
    Without a (live) credential a browser goes back to the pairing screen; another kiosk's
    credential is refused."""
    found = _KIOSK_PAGE.match(request.path)
    if found is None or found["kiosk"] in RESERVED_IDS:
        return None
    kiosk = current_kiosk()
    if kiosk is None:
        if request.method == "GET" and request.accept_mimetypes.accept_html:
            return redirect(url_for("kiosk_access.pair"))
        raise Unauthorized("This page is for a paired kiosk: open /kiosk/ on the kiosk to "
                           "pair it.")
    if kiosk.id != found["kiosk"]:
        raise Forbidden("This browser is paired with another kiosk and may open only that "
                        "kiosk's pages.")
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    """The pairing pages carry the staff pages' headers: same-origin only, never cached."""
    return page_headers(response, cache=request.endpoint == "kiosk_access.static")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_guard)
