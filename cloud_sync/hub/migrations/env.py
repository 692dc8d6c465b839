"""Alembic's environment for the hub, configured by cloud_sync/hub/schema_version.py (no
alembic.ini): it runs on the connection it is given, inside that connection's transaction."""

from __future__ import annotations

from alembic import context

from cloud_sync.hub.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
