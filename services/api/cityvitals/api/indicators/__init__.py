"""The indicators' computations, one module per domain, registered by catalogue id.

Importing the package imports every domain module (which registers its computations)
and fails when a catalogue id has none, so an indicator added to the catalogue cannot
be served without its computation.
"""

from __future__ import annotations

from cityvitals.api.indicators import devices, energy, parking, waste
from cityvitals.api.indicators.base import (
    BREAKDOWNS,
    KINDS,
    VALUES,
    Acc,
    ScopeView,
    newer,
    ratio,
)
from cityvitals.catalogue import CATALOGUE

_UNCOMPUTED = [i.id for i in CATALOGUE if i.id not in VALUES]
if _UNCOMPUTED:
    raise RuntimeError(f"catalogue indicators without a computation: {_UNCOMPUTED}")

DOMAINS = (parking, waste, energy, devices)

__all__ = ["BREAKDOWNS", "DOMAINS", "KINDS", "VALUES", "Acc", "ScopeView", "newer", "ratio"]
