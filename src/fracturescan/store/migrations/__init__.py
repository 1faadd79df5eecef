"""Alembic migrations of the app database (run through :mod:`fracturescan.store.schema`)."""
