"""Alembic's environment: migrate on the connection `migrations.upgrade()` hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from edgecut.server.fleet.state.migrations import metadata

conn = context.config.attributes.get("connection")
if conn is None:
    raise RuntimeError("edgecut's migrations run through edgecut.server.fleet.state.migrations.upgrade()")
context.configure(connection=conn, target_metadata=metadata(), render_as_batch=conn.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
