"""The central CRM hub service."""
