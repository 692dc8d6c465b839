"""The hub's Flask app: the store API (`/api/v1/stores/...`), the JWK Set, health, and the
regional dashboard. `app.extensions["hub"]` is the running `Hub`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Flask

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.settings import HubSettings
from store_contract.files import SecretFolder
from store_contract.web import session_cookies


@dataclass
class Hub:
    settings: HubSettings
    db: HubDB


def hub_datadir(settings: HubSettings) -> SecretFolder:
    """The hub's data dir (0700) with its secrets/ (session key, signing key), 0600 files."""
    return SecretFolder(settings.data_dir).ensure()


def create_app(settings: HubSettings, db: HubDB | None = None) -> Flask:
    from cloud_sync.hub import api, dashboard

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
    return app
