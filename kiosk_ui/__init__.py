"""The shopper-facing kiosk web app (docs/kiosk.md): a Flask blueprint the edge serves
same-origin, over the one interface `model.KioskBackend` the edge implements."""

from kiosk_ui.views import create_blueprint

__all__ = ["create_blueprint"]
