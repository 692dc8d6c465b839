"""The hub's HTTP API for stores (docs/hub.md, docs/sync.md): events in, changes out, keys.

Views are thin: they check the store's bearer token, decode JSON, call one function of
`ingest`, `feed` or `keys`, and encode the answer. Errors have the edge's one JSON shape
`{"error": {"code", "message", "detail"?}}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from cloud_sync.hub import feed, ingest, keys, lookups, stores
from cloud_sync.hub.context import Hub
from store_contract.errors import EdgeError, Forbidden, Unauthorized

log = logging.getLogger(__name__)
bp = Blueprint("hub_api", __name__)
_JSON_PATHS = ("/api/", "/healthz", "/.well-known")
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "batch_too_large", 415: "bad_request",
               429: "too_many_requests"}
# Recording every request's contact would make every read a write: a few seconds' grace.
_CONTACT_EVERY_S = 5.0


def _hub() -> Hub:
    hub: Hub = current_app.extensions["hub"]
    return hub


def _error(exc: EdgeError) -> tuple[Response, int]:
    return jsonify({"error": exc.to_dict()}), exc.status


class _Contacts:
    """When each store was last recorded as in contact, by this process."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, store_id: str, now: float) -> bool:
        with self._lock:
            if now - self._seen.get(store_id, 0.0) < _CONTACT_EVERY_S:
                return False
            self._seen[store_id] = now
            return True


def _store(store_id: str) -> str:
    """The caller's store after checking its bearer token against the path's store."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A store bearer token is required.")
    caller = stores.authenticate(_hub().db, token.strip())
    if caller is None:
        raise Unauthorized("That store token is not known to the hub.")
    if caller != store_id:
        raise Forbidden(f"This token belongs to store {caller}, not {store_id}.",
                        code="wrong_store")
    contacts: _Contacts = current_app.extensions["hub_contacts"]
    now = time.time()
    if contacts.due(caller, now):
        stores.touch(_hub().db, caller, now)
    return caller


def _json_body() -> Any:
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EdgeError("The body is not valid JSON.", code="bad_json", status=400) from None


@bp.post("/api/v1/stores/<store_id>/events")
def post_events(store_id: str) -> Any:
    """Store a batch of events; 200 with accepted/duplicates/rejected."""
    caller = _store(store_id)
    hub = _hub()
    return jsonify(ingest.ingest(hub.db, hub.settings, caller, _json_body(),
                                 current_app.extensions["hub_key"]))


@bp.get("/api/v1/stores/<store_id>/changes")
def get_changes(store_id: str) -> Any:
    """The changes for this store after its cursor."""
    caller = _store(store_id)
    return jsonify(feed.read_changes(_hub().db, caller, request.args.get("cursor"),
                                     request.args.get("limit")))


@bp.post("/api/v1/stores/<store_id>/lookup")
def post_lookup(store_id: str) -> Any:
    """One customer the store does not hold, by identifier or member code (rate-limited,
    audited): 200 `{"customer"}`, 404 customer_unknown, 429 too_many_lookups."""
    caller = _store(store_id)
    hub = _hub()
    hub_key: keys.SigningKey = current_app.extensions["hub_key"]
    try:
        return jsonify(lookups.online_lookup(hub.db, hub.settings, hub_key, caller,
                                             _json_body(),
                                             current_app.extensions["hub_throttle_log"]))
    except lookups.TooManyLookups as exc:
        resp, status = _error(exc)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp, status


@bp.put("/api/v1/stores/<store_id>/key")
def put_key(store_id: str) -> Any:
    """Publish the store's public key for receipt coupons."""
    caller = _store(store_id)
    hub_key: keys.SigningKey = current_app.extensions["hub_key"]
    return jsonify(keys.put_store_key(_hub().db, hub_key, caller, _json_body()))


@bp.get("/.well-known/jwks.json")
def jwks() -> Any:
    """The keys coupons and member codes of this chain are signed with."""
    hub_key: keys.SigningKey = current_app.extensions["hub_key"]
    with _hub().db.read() as conn:
        body = feed.jwk_set(conn, hub_key)
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "max-age=60"
    return resp


@bp.get("/healthz")
def healthz() -> Any:
    """200 when the database answers, 503 when it does not."""
    try:
        with _hub().db.read() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means the same thing here: not healthy
        log.warning("health check: database failed: %s", exc)
        return jsonify({"status": "unavailable",
                        "database": {"ok": False, "error": exc.__class__.__name__}}), 503
    return jsonify({"status": "ok", "database": {"ok": True}})


@bp.errorhandler(EdgeError)
def _edge_error(exc: EdgeError) -> tuple[Response, int]:
    if exc.status >= 500:
        log.error("hub API error: %s", exc.message)
    return _error(exc)


def _http_error(exc: HTTPException) -> Any:
    """JSON for werkzeug's errors (404, 405, 413, ...) under the API's paths only."""
    if not request.path.startswith(_JSON_PATHS):
        return exc
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    message = exc.description or exc.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"The batch is larger than the hub takes ({limit} bytes); send fewer events."
    return _error(EdgeError(message, code=code, status=status))


def init_app(app: Flask) -> None:
    """Register the store API; make sure the hub's key exists and the feed carries it."""
    hub: Hub = app.extensions["hub"]
    hub_key = keys.hub_signing_key(hub.settings)
    app.extensions["hub_key"] = hub_key
    app.extensions["hub_contacts"] = _Contacts()
    app.extensions["hub_throttle_log"] = lookups.ThrottleLog(hub.db)
    feed.publish_keys(hub.db, hub_key)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
