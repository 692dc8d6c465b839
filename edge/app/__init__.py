"""The edge as it runs: the Flask app that wires the core (`edge`) to the HTTP API, the staff
pages, the bus, the hub link and the printers (docs/architecture.md)."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask

from edge.settings import Settings, load_settings
from store_contract.web import session_cookies

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, start: bool = False) -> Flask:
    """Build the edge: settings, database, bus, scheduler and blueprints.

    With `start=True` the bus connects and the scheduler runs (what `edge serve` does);
    otherwise they wait for `app.extensions["edge"].start()`.
    """
    from edge.app import api, kiosk, kiosk_access, staff
    from edge.app.service import EdgeService
    from store_contract import logsafe

    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # job bookkeeping is noise
    # No e-mail, phone or card number in any log line; times in the store's zone, with offset.
    logsafe.install(zone=settings.zone)
    service = EdgeService(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=service.datadir.secret_token("session-key"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.staff_session_hours),
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
        # Checked before a body is read: a larger one is 413 (docs/settings.md).
        MAX_CONTENT_LENGTH=settings.http_max_body_bytes,
    )
    session_cookies(app)
    app.extensions["edge"] = service
    api.init_app(app)
    staff.init_app(app)
    staff.csrf.exempt(api.bp)
    kiosk_access.init_app(app)
    kiosk.init_app(app)
    if start:
        service.start()
    return app
