"""The `cityvitals` command: one entry point for every service (SPEC §10)."""

from __future__ import annotations

from cityvitals.cli.main import app

__all__ = ["app"]
