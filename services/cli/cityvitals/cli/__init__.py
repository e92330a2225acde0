"""The `cityvitals` command: one entry point for every service (docs/running.md)."""

from __future__ import annotations

from cityvitals.cli.main import app

__all__ = ["app"]
