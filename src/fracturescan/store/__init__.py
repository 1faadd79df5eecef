"""Persistence for the web app (SQLAlchemy): users, settings and the append-only audit trail.

Needs the ``app`` extra (sqlalchemy, argon2-cffi); nothing outside the web app imports it.
"""
