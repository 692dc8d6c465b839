"""The regional dashboard of the CRM hub (login, per-store KPIs, sync health, conflicts)."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("hub_dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard-static")


def init_app(app: Flask) -> None:
    """Register the dashboard blueprint."""
    app.register_blueprint(bp)
