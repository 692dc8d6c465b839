"""The kiosk's pages: attract → identify → the shopper's home → done (docs/kiosk.md).

Every page is for one kiosk (`/kiosk/<kiosk_id>/...`) and answers only the browser paired
with it (its credential, read by the backend): another kiosk's screen, a staff browser or
no credential at all gets nothing of it. The shopper's session is a random token in a
cookie (`kiosk_shopper`, this kiosk's path only); the pages carry no shopper data in their
URLs, and every answer is `Cache-Control: no-store`, so nothing of a shopper stays in the
browser once the screen has gone back to its attract page.
"""

from __future__ import annotations

import time
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from store_contract.web import page_headers, scan_stream

from .i18n import Gettext, check_langs, gettext_for, language_name
from .model import Coupon, KioskBackend, KioskInfo, Offer, Refused, Terms
from .sessions import PhoneLockout, Session, ShopperSessions

SESSION_COOKIE = "kiosk_shopper"
LANG_COOKIE = "kiosk_lang"
# "Everything lower down" (reachable from a wheelchair): a layout choice, not the shopper's
# data, yet it goes with the session (Done, the idle timeout) or after LOW_S at most, so the
# next person finds the screen as it stands.
LOW_COOKIE = "kiosk_low"
LOW_S = 900
PHONE_DIGITS = 20  # a keypad entry longer than this is no phone number

# What the screen says for each reason the backend (or these pages) refuse an
# identification: the kiosk owns every word a shopper reads, in every language.
REFUSALS = {
    "unknown": "We could not find your account. Please check the number, or ask a member "
               "of staff.",
    "expired": "This member code has expired. Please refresh it in the app and scan it "
               "again.",
    "forged": "This code is not one of ours. Please use the member code in our app, or ask "
              "a member of staff.",
    "used": "This member code was already used. Please refresh it in the app and scan it "
            "again.",
    "bad_input": "That is not a code the kiosk can read. Please try again.",
    "not_phone": "That is not a phone number. Please try again.",
    "locked": "Phone look-up is paused for a while. Please scan your app's member code or "
              "loyalty card, or ask a member of staff.",
    "unavailable": "Sorry, that is not possible right now. Please ask a member of staff.",
    "nothing": "Scan your member code or loyalty card, or type your phone number.",
    "not_offered": "This offer is no longer available.",
    "no_consent": "Personal offers are shown only with your consent.",
    "no_printer": "This kiosk cannot print. Your coupon is in your app.",
    "unknown_product": "We do not know this product here. Please ask a member of staff.",
}


def describe_terms(terms: Terms, _: Gettext) -> str:
    """What a coupon gives, as one sentence in the shopper's language."""
    parts = {"value": terms.value, "min": terms.min_basket}
    if terms.min_basket and terms.selected_items:
        return _("%(value)s off selected items in a basket of %(min)s or more") % parts
    if terms.min_basket:
        return _("%(value)s off a basket of %(min)s or more") % parts
    if terms.selected_items:
        return _("%(value)s off selected items") % parts
    return _("%(value)s off your shopping") % parts


# What the screen says while a coupon prints (a held job says why it waits).
PRINT_WORDS = {
    "queued": "Printing your coupon…",
    "sending": "Printing your coupon…",
    "printed": "Your coupon is printed. Please take it from the printer.",
    "paper_empty": "The printer is out of paper. Your coupon prints as soon as a member of "
                   "staff has put in a new roll.",
    "cover_open": "The printer's cover is open. Your coupon prints as soon as it is closed.",
    "offline": "The printer is not working right now. Your coupon prints when it is back; "
               "it is also in your app.",
    "failed": "The coupon could not be printed. It is in your app; please ask a member of "
              "staff.",
}


def _refusal_words(reason: str) -> str:
    return gettext_for(g.lang)(REFUSALS.get(reason, REFUSALS["unavailable"]))


def create_blueprint(backend: KioskBackend, *, idle_s: float = 60.0,
                     lockout: PhoneLockout | None = None) -> Blueprint:
    """The kiosk pages over `backend`; `idle_s`: no touch for this long ends a shopper's
    session (the page warns 20 s before)."""
    bp = Blueprint("kiosk", __name__, url_prefix="/kiosk/<kiosk_id>",
                   template_folder="templates", static_folder="static",
                   static_url_path="/static")
    sessions = ShopperSessions(idle_s)
    phones = lockout or PhoneLockout()
    bp.record_once(lambda state: state.app.extensions.__setitem__(
        "kiosk_ui", {"sessions": sessions, "lockout": phones, "backend": backend}))

    # ------------------------------------------------------------ every request

    @bp.url_value_preprocessor
    def _kiosk_id_of(_endpoint: str | None, values: dict[str, Any] | None) -> None:
        g.kiosk_wanted = (values or {}).pop("kiosk_id", None)

    @bp.before_request
    def _kiosk() -> None:
        """Only the browser paired with this kiosk (after the edge's own guard, which
        answers in words first; this is the pages' own check, whatever is in front)."""
        wanted = g.pop("kiosk_wanted", None)
        kiosk = backend.kiosk()
        if kiosk is None:
            if request.method == "GET" and request.endpoint not in ("kiosk.scans",
                                                                     "kiosk.static"):
                abort(redirect("/kiosk/pair"))
            abort(401)
        if kiosk.id != wanted:
            abort(403)
        if request.method == "POST" and not _same_origin():
            abort(403)
        g.kiosk = kiosk
        g.lang = _lang(kiosk)

    @bp.url_defaults
    def _kiosk_id(_endpoint: str, values: dict[str, Any]) -> None:
        if "kiosk_id" not in values and "kiosk" in g:
            values["kiosk_id"] = g.kiosk.id

    @bp.after_request
    def _headers(response: Response) -> Response:
        return page_headers(response, cache=request.endpoint == "kiosk.static")

    @bp.context_processor
    def _words() -> dict[str, Any]:
        kiosk: KioskInfo | None = g.get("kiosk")
        if kiosk is None:
            return {}
        _ = _gettext()
        return {"_": _, "lang": g.lang, "kiosk": kiosk, "idle_s": int(idle_s),
                "low": request.cookies.get(LOW_COOKIE) == "1",
                "describe": lambda terms: describe_terms(terms, _),
                "langs": [(code, language_name(code)) for code in check_langs(kiosk.langs)]}

    def _gettext() -> Gettext:
        return gettext_for(g.lang)

    def _lang(kiosk: KioskInfo) -> str:
        langs = check_langs(kiosk.langs)
        chosen = request.cookies.get(LANG_COOKIE)
        return chosen if chosen in langs else langs[0]

    def _session() -> Session | None:
        return sessions.get(request.cookies.get(SESSION_COOKIE), g.kiosk.id)

    def _end(session: Session | None, how: str) -> None:
        if session is not None:
            backend.session_ended(g.kiosk, session.summary(time.monotonic(), how))

    def _cleared(response: Any) -> Any:
        """The browser forgets the shopper: the session and language cookies go, and (on
        HTTPS, where browsers honour it) the page cache and every storage of the site."""
        path = url_for("kiosk.attract").rstrip("/")
        response.delete_cookie(SESSION_COOKIE, path=path)
        response.delete_cookie(LANG_COOKIE, path=path)
        response.delete_cookie(LOW_COOKIE, path=path)
        response.headers["Clear-Site-Data"] = '"cache", "storage"'
        return response

    # ------------------------------------------------------------ pages

    @bp.get("/")
    def attract() -> Any:
        for old in sessions.expired():
            backend.session_ended(g.kiosk, old.summary(old.last + idle_s, "timeout"))
        return render_template("kiosk/attract.html")

    @bp.get("/lang/<code>")
    def language(code: str) -> Any:
        response = redirect(url_for("kiosk.attract"))
        if code in check_langs(g.kiosk.langs):
            response.set_cookie(LANG_COOKIE, code, httponly=True, samesite="Strict",
                                secure=request.is_secure,
                                path=url_for("kiosk.attract").rstrip("/"))
        return response

    @bp.post("/low")
    def low() -> Any:
        """Turn "everything lower down" on or off, and show the same page again."""
        home = url_for("kiosk.attract")
        back = request.form.get("next", "")
        own = back.startswith(home) and not any(bad in back for bad in ("//", "\\", ".."))
        response = redirect(back if own else home, code=303)
        path = home.rstrip("/")
        if request.cookies.get(LOW_COOKIE) == "1":
            response.delete_cookie(LOW_COOKIE, path=path)
        else:
            response.set_cookie(LOW_COOKIE, "1", max_age=LOW_S, httponly=True,
                                samesite="Strict", secure=request.is_secure, path=path)
        return response

    @bp.get("/identify")
    def identify_page() -> Any:
        how = request.args.get("how", "")
        return render_template("kiosk/identify.html", how=how if how in ("card", "phone")
                               else "", error=None,
                               locked=phones.locked_for(g.kiosk.id))

    @bp.post("/identify")
    def identify() -> Any:
        code = request.form.get("code", "").strip()
        phone = request.form.get("phone", "").strip()
        how = "phone" if phone else ("card" if request.form.get("how") == "card" else "scan")
        wants_json = request.accept_mimetypes.best == "application/json"
        try:
            if phone:
                shopper = _by_phone(phone)
            elif code:
                if len(code) > 8192:
                    raise Refused("bad_input", "too long")
                shopper = backend.identify(g.kiosk, "", code=code)
            else:
                raise Refused("nothing", "nothing typed or scanned")
        except Refused as refusal:
            status = 423 if refusal.reason == "locked" else 400
            message = _refusal_words(refusal.reason)
            if wants_json:
                return jsonify({"ok": False, "reason": refusal.reason,
                                "message": message}), status
            return render_template("kiosk/identify.html", how=how if how != "scan" else "",
                                   error=message,
                                   locked=phones.locked_for(g.kiosk.id)), status
        method = shopper.method or how
        session, old = sessions.start(g.kiosk.id, shopper.id, method, g.lang, shopper.masked,
                                      proof=code if method == "member" else None)
        _end(old, "replaced")
        target = url_for("kiosk.home")
        response = jsonify({"ok": True, "next": target}) if wants_json else redirect(target)
        response.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="Strict",
                            secure=request.is_secure,
                            path=url_for("kiosk.attract").rstrip("/"))
        return response

    def _by_phone(phone: str) -> Any:
        kiosk = g.kiosk
        left = phones.locked_for(kiosk.id)
        if left:
            backend.audit_phone(kiosk, "locked", phone)
            raise Refused("locked", "locked", seconds=round(left))
        digits = "".join(ch for ch in phone if ch.isdigit() or ch == "+")
        if not digits or len(digits) > PHONE_DIGITS or len(phone) > 2 * PHONE_DIGITS:
            outcome = "locked" if phones.wrong(kiosk.id) else "invalid"
            backend.audit_phone(kiosk, outcome, phone)
            raise Refused(outcome if outcome == "locked" else "not_phone", outcome)
        try:
            shopper = backend.identify(kiosk, "", phone=digits)
        except Refused as refusal:
            locks = phones.wrong(kiosk.id)
            backend.audit_phone(kiosk, "locked" if locks else refusal.reason, phone)
            if locks:
                raise Refused("locked", "locked", seconds=round(locks)) from None
            raise
        phones.found(kiosk.id)
        backend.audit_phone(kiosk, "found", phone)
        return shopper

    @bp.post("/scan")
    def scan() -> Any:
        """A code the kiosk's scanner read (pushed to the page, which posts it here): a
        product's barcode gets its price (and the shopper's offers for it); anything else
        is an identification. A code that is neither gets a friendly word, and the screen
        stays as it was."""
        code = request.form.get("code", "")
        symbology = request.form.get("symbology") or None
        if not code or len(code) > 8192:
            return jsonify({"ok": False, "reason": "bad_input",
                            "message": _refusal_words("bad_input")}), 400
        session = _session()
        try:
            price = backend.price(g.kiosk, code, symbology,
                                  session.shopper if session else None, g.lang)
        except Refused:
            if _looks_like_product(code, symbology):
                return jsonify({"ok": False, "reason": "unknown_product",
                                "message": _refusal_words("unknown_product")}), 404
        else:
            if session is not None:
                session.did("price_checks")
            return jsonify({"ok": True, "kind": "price", "name": price.name,
                            "price": price.price, "offers": list(price.offers)})
        return identify()

    @bp.get("/home")
    def home() -> Any:
        return _shopper_page("kiosk/home.html")

    def _shopper_page(template: str) -> Any:
        """A page of the identified shopper's (their home, their choices); without a live
        session, or with a shopper erased meanwhile, the attract screen."""
        session = _session()
        if session is None:
            return _cleared(redirect(url_for("kiosk.attract")))
        try:
            view = backend.home(g.kiosk, session.shopper, g.lang)
        except Refused:  # erased or forgotten while on the screen
            _end(sessions.end(session.token), "gone")
            return _cleared(redirect(url_for("kiosk.attract")))
        return render_template(template, home=view, who=session.masked,
                               with_app=session.proof is not None)

    @bp.get("/offer/<campaign>")
    def offer_page(campaign: str) -> Any:
        """One offer or coupon of the shopper's, whole: its terms, its last day, the
        products it is for, and what to do with it."""
        session = _session()
        if session is None:
            return _cleared(redirect(url_for("kiosk.attract")))
        try:
            detail = backend.offer(g.kiosk, session.shopper, campaign[:128], g.lang)
        except Refused:  # not theirs (or no longer): their home shows what is
            return redirect(url_for("kiosk.home"))
        return render_template("kiosk/offer.html", detail=detail, item=detail.item,
                               who=session.masked)

    @bp.post("/clip")
    def clip() -> Any:
        """Clip one of the offers on the home screen (a double tap clips once)."""
        session = _session()
        if session is None:
            return _cleared(make_response(jsonify({"ok": False, "reason": "ended"}), 401))
        campaign = request.form.get("campaign", "")
        try:
            coupon = backend.clip(g.kiosk, session.shopper, campaign[:128])
        except Refused as refusal:
            return jsonify({"ok": False, "reason": refusal.reason,
                             "message": _refusal_words(refusal.reason)}), 409
        if campaign not in session.clipped:
            session.clipped.add(campaign)
            session.did("clipped")
        if request.accept_mimetypes.best == "application/json":
            return jsonify({"ok": True, "coupon": coupon})
        if request.form.get("back") == "offer":  # pressed on the offer's own page
            return redirect(url_for("kiosk.offer_page", campaign=campaign[:128]))
        return redirect(url_for("kiosk.home"))

    @bp.post("/print")
    def print_offer() -> Any:
        """Print an offer's or a wallet coupon's coupon on the kiosk's printer: once per
        offer in a session (a second tap, or a second press later, shows the first
        job's progress)."""
        session = _session()
        if session is None:
            return _cleared(make_response(jsonify({"ok": False, "reason": "ended"}), 401))
        campaign = request.form.get("campaign", "")[:128]
        with session.printing:  # a second press at the same moment waits, then sees the job
            job = session.printed.get(campaign)
            if job is None:
                try:
                    job = backend.print_offer(g.kiosk, session.shopper, campaign,
                                              _slip_lines(session, campaign))
                except Refused as refusal:
                    return jsonify({"ok": False, "reason": refusal.reason,
                                    "message": _refusal_words(refusal.reason)}), 409
                session.printed[campaign] = job
                session.did("printed")
        return jsonify({"ok": True, "job": job,
                        "status": url_for("kiosk.print_status", job=job)})

    def _slip_lines(session: Session, campaign: str) -> list[str]:
        """What the coupon slip says, in the shopper's language: title, terms, last day."""
        _ = _gettext()
        view = backend.home(g.kiosk, session.shopper, g.lang)
        items: list[Offer | Coupon] = [*view.offers, *view.wallet]
        for item in items:
            if item.campaign == campaign:
                lines = [item.title, describe_terms(item.terms, _)]
                if item.ends:
                    lines.append(_("Valid until %(day)s") % {"day": item.ends})
                return lines
        raise Refused("not_offered", "not an offer or coupon of this shopper")

    @bp.get("/print/<job>")
    def print_status(job: str) -> Any:
        """How the session's print job is doing, in words for the screen."""
        session = _session()
        if session is None:
            return _cleared(make_response(jsonify({"ok": False, "reason": "ended"}), 401))
        if job not in session.printed.values():
            return jsonify({"ok": False, "reason": "unknown"}), 404
        state, reason = backend.print_state(g.kiosk, job)
        key = reason if state == "held" and reason in PRINT_WORDS else state
        return jsonify({"ok": True, "state": state, "reason": reason,
                        "message": gettext_for(g.lang)(PRINT_WORDS.get(key,
                                                                       PRINT_WORDS["failed"]))})

    @bp.get("/choices")
    def choices_page() -> Any:
        """The shopper's consent, to see and change."""
        return _shopper_page("kiosk/choices.html")

    @bp.post("/choices")
    def choices() -> Any:
        session = _session()
        if session is None:
            return _cleared(redirect(url_for("kiosk.attract")))
        wanted = {name: request.form.get(name) == "yes" for name in ("personalised", "marketing")
                  if request.form.get(name) in ("yes", "no")}
        try:
            backend.set_consent(g.kiosk, session.shopper, wanted, session.proof)
        except Refused:
            _end(sessions.end(session.token), "gone")
            return _cleared(redirect(url_for("kiosk.attract")))
        session.did("consent")
        return redirect(url_for("kiosk.home"))

    @bp.post("/alive")
    def alive() -> Any:
        """A touch on the page ("More time" included): the session goes on."""
        if _session() is None:
            return _cleared(make_response(jsonify({"ok": False}), 401))
        return jsonify({"ok": True, "idle_s": idle_s})

    @bp.post("/done")
    def done() -> Any:
        how = "timeout" if request.form.get("why") == "timeout" else "done"
        _end(sessions.end(request.cookies.get(SESSION_COOKIE)), how)
        return _cleared(redirect(url_for("kiosk.attract")))

    @bp.get("/scans")
    def scans() -> Any:
        """The kiosk's scanner, live (server-sent events, `event: scan` with the code and
        symbology only): the attract and identify pages identify a member code or card
        the moment it is scanned."""
        feed = backend.listen(g.kiosk)
        if feed is None:
            return jsonify({"ok": False, "reason": "busy"}), 503

        return scan_stream(feed.next, lambda: backend.leave(feed),
                           shape=lambda item: {"code": item.get("code"),
                                               "symbology": item.get("symbology")})

    return bp


def _looks_like_product(code: str, symbology: str | None) -> bool:
    """A retail barcode (an EAN/UPC symbology, or 8 to 14 digits): not a shopper's code,
    so an unknown one is "ask a member of staff", not "we could not find your account"."""
    if symbology is not None and symbology.startswith("]E"):
        return True
    text = code.strip()
    return text.isascii() and text.isdigit() and len(text) in (8, 12, 13, 14)


def _same_origin() -> bool:
    """A form post from this site's own page (the kiosk's cookies are SameSite=Strict as
    well): a browser names the origin of a cross-site post, and it must be ours."""
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")
