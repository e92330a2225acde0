"""Fixtures that run the project's own services as real processes."""

from __future__ import annotations
