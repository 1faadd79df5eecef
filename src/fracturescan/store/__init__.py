"""Persistence for the web app and the REST API (SQLAlchemy): users, API keys, settings and the
append-only audit trail.

Needs the ``app`` or ``api`` extra (sqlalchemy, argon2-cffi); training and evaluation never import it.
"""
