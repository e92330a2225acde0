"""Connection helpers shared by the services."""

from __future__ import annotations


def sqlalchemy_url(database_url: str) -> str:
    """The URL SQLAlchemy needs to use psycopg 3 for a `postgresql://` URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(database_url: str) -> str:
    """The URL libpq (psycopg) accepts."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)
