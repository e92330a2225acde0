"""Each indicator's computation lives in its domain's module, registered by catalogue id."""

from __future__ import annotations

import pytest

from cityvitals.api.indicators import BREAKDOWNS, DOMAINS, VALUES, ScopeView
from cityvitals.api.indicators.base import computes
from cityvitals.catalogue import BY_ID, CATALOGUE


def test_every_catalogue_indicator_has_a_computation_in_its_domains_module() -> None:
    assert set(VALUES) == {i.id for i in CATALOGUE}
    for ind_id, fn in {**VALUES, **BREAKDOWNS}.items():
        assert fn.__module__ == f"cityvitals.api.indicators.{BY_ID[ind_id].domain}"
    assert {d.__name__.rsplit(".", 1)[-1] for d in DOMAINS} == {i.domain for i in CATALOGUE}


def _nothing(s: ScopeView) -> float | None:
    return None


def test_a_computation_for_no_catalogue_id_or_twice_or_elsewhere_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the catalogue"):
        computes("parking.imaginary")(_nothing)
    with pytest.raises(ValueError, match="belongs in the parking module"):
        computes("parking.free_spaces")(_nothing)
    _nothing.__module__ = "cityvitals.api.indicators.parking"
    with pytest.raises(ValueError, match="computed twice"):
        computes("parking.free_spaces")(_nothing)
