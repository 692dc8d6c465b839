"""The hub's Flask app: the store API (`/api/v1/stores/...`), the JWK Set, health, and the
regional dashboard. `app.extensions["hub"]` is the running `Hub`."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from cloud_sync.hub import api, dashboard
from cloud_sync.hub.context import Hub, hub_datadir
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.settings import HubSettings
from store_contract.web import session_cookies


def create_app(settings: HubSettings, db: HubDB | None = None) -> Flask:
    datadir = hub_datadir(settings)
    hub = Hub(settings, db or HubDB(settings.db_url))
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=datadir.secret_token("session-key"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=settings.max_batch_bytes,
    )
    session_cookies(app)
    app.extensions["hub"] = hub
    api.init_app(app)        # store API, /healthz, /.well-known/jwks.json (CSRF-exempt)
    dashboard.init_app(app)  # login, dashboard, CSV export (CSRF-protected forms)
    dashboard.csrf.exempt(api.bp)  # the store API signs in with bearer tokens, no cookies
    return app
