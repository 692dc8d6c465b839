"""The edge's JSON HTTP API (`/api/v1`), `/healthz` and `/metrics`, and the one error shape.

Every error an HTTP client sees is `{"error": {"code", "message", "detail"?}}` with the
error's status, whether it came from the domain, from Flask/werkzeug or from a crash.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from edge.app.service import EdgeService
from edge.app.staff.auth import require_staff
from edge.devices import authenticate, list_devices
from edge.dispatch import Caller
from edge.scanners import list_scanners
from store_contract.errors import EdgeError, Unauthorized
from store_contract.protocol import ID_RE
from store_contract.wording import device_name, local_time

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


def service() -> EdgeService:
    svc: EdgeService = current_app.extensions["edge"]
    return svc


def error_response(code: str, message: str, status: int,
                   detail: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if detail:
        body["detail"] = detail
    resp = jsonify({"error": body})
    resp.status_code = status
    return resp


def _monitor_allowed() -> bool:
    """May this request see the edge's details (/metrics, the full /healthz)? With
    `monitor_token` set: a request bearing it. Without: a request from the box itself."""
    token = service().settings.monitor_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  token.encode())
    return request.remote_addr in ("127.0.0.1", "::1")


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    ok, report = service().health()
    if not _monitor_allowed():
        # Liveness for anyone (a load balancer, a ping); the details are the monitor's.
        return jsonify({"status": report["status"]}), 200 if ok else 503
    return jsonify(report), 200 if ok else 503


@bp.get("/metrics")
def metrics() -> Response:
    if not _monitor_allowed():
        raise Unauthorized("/metrics needs the monitor token (EDGE_MONITOR_TOKEN) as "
                           "'Authorization: Bearer ...', or a request from the box itself.")
    svc = service()
    try:
        svc.sender.queue_report()  # the queue gauges, fresh
    except sqlite3.Error:
        log.warning("metrics: the database did not answer")
    # The format the scraper asks for (Prometheus text 0.0.4 unless it accepts OpenMetrics),
    # its Content-Type exactly as the library states it: one charset.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(svc.metrics.registry), content_type=content_type)


# How the devices page names a lane used only through the web (no MQTT presence to show).
WEB_TILL = "web till: the staff checkout page or the HTTP POS API, not on the bus"


@bp.get("/api/v1/devices")
@require_staff("cashier")
def devices() -> Response:
    """Every device with its presence; `last_seen_local` is its last message as staff read
    it (the store's zone and locale, wording.local_time), so the page's script formats
    nothing itself."""
    svc = service()
    s = svc.settings
    rows = svc.last_seen.merge(list_devices(svc.store))
    for row in rows:
        row["last_seen_local"] = local_time(row["last_seen"], s.zone, s.locale, "seconds") \
            if row["last_seen"] else None
        if row["kind"] == "pos" and row["state"] == "unknown" and row["last_seen"]:
            # Never on the bus, yet in use: a till on the staff checkout page or the HTTP API.
            row["status"].setdefault("till", WEB_TILL)
    return jsonify({"store": s.store_id, "zone": s.tz, "devices": rows})


@bp.get("/api/v1/scanners")
@require_staff("cashier")
def scanners() -> Response:
    """Every enrolled scanner: where it sends (`sends_to`, as staff read it), its counts,
    and its last scan and last scan with nowhere to go in the store's time
    (`last_scan_local`, `last_unassigned_local`). Never a code."""
    svc = service()
    s = svc.settings
    rows = svc.scans.tally.merge(list_scanners(svc.store))
    for row in rows:
        target = row["assigned_to"]
        if target is None:
            row["sends_to"] = "nowhere: not assigned"
        else:
            row["sends_to"] = device_name(target["kind"], target["id"]) + (
                "" if target["enrolled"] else ", no longer enrolled")
        for key in ("last_scan", "last_unassigned"):
            row[f"{key}_local"] = local_time(row[key], s.zone, s.locale, "seconds") \
                if row[key] else None
    return jsonify({"store": s.store_id, "scanners": rows})


@bp.post("/api/v1/pos/<device>/<method>")
def pos_request(device: str, method: str) -> Response:
    """A POS method over HTTP, for lanes that do not speak MQTT (docs/checkout.md §19).

    The body is the request envelope; the answer is the reply envelope, with status 200
    whether the edge said yes or no (`ok`). The lane authenticates with its own device
    password as a bearer token, so it can only ever act as itself.
    """
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send the lane's device password as 'Authorization: Bearer ...'.")
    if not ID_RE.match(device) or not authenticate(service().store, "pos", device, token.strip()):
        raise Unauthorized("Unknown lane or wrong token.")
    service().last_seen.note("pos", device)
    reply = service().dispatcher.handle_request(Caller("pos", device), method,
                                                request.get_data(cache=False))
    return Response(reply.body, status=200, mimetype="application/json")


def _wants_json() -> bool:
    if request.path.startswith(("/api/", "/healthz", "/metrics")):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json"


def _error_page(message: str, status: int) -> tuple[Any, int]:
    """A refusal on a staff page, in the staff pages' own frame (with the way back); plain
    text elsewhere."""
    if not request.path.startswith("/staff"):
        return message, status
    from edge.app.staff.auth import current_user

    heading = {403: "Not allowed here", 404: "Not found"}.get(status, "Something went wrong")
    try:
        user = current_user()
    except Exception:  # a broken session must not hide the message
        user = None
    return render_template("error.html", heading=heading, message=message, user=user,
                           store=service().settings), status


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _body_limit() -> None:
        # Before anything else looks at the request (a lane's token, a form): a body that
        # says it is over the limit is not read at all. One sent without a length is cut
        # off at the limit when read (MAX_CONTENT_LENGTH).
        limit = app.config["MAX_CONTENT_LENGTH"]
        if limit is not None and (request.content_length or 0) > limit:
            raise RequestEntityTooLarge()

    @app.errorhandler(EdgeError)
    def _edge_error(exc: EdgeError) -> Any:
        if not _wants_json():
            return _error_page(exc.message, exc.status)
        return error_response(exc.code, exc.message, exc.status, exc.detail)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if not _wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(code, exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = EdgeError()
        if not _wants_json():
            return _error_page(err.message, 500)
        return error_response(err.code, err.message, 500)
