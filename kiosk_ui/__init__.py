"""The shopper-facing kiosk web app."""
