"""Sync between the store edge and the central CRM hub."""
