"""Alembic environment: migrations run on the connection :mod:`fracturescan.store.schema` hands
over (never from an ini file), in that caller's transaction."""

from alembic import context

from fracturescan.store.db import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations with `fracturescan db upgrade --db URL` (fracturescan.store.schema)")
# SQLite cannot alter most of a table in place: batch mode rebuilds it when a revision needs that.
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
