"""Daily curves of the simulated city, as plain functions of local time.

Each returns a level for a local wall-clock time; the simulation turns levels into
state changes. Shapes, not data: they follow how Shanghai's places are used (offices
fill at 9 and empty at 18, residents park at night, huts fill in the drop-off windows).
"""

from __future__ import annotations

import math
from datetime import datetime

from cityvitals.payloads import Category

# Monthly mean air temperature in Shanghai, °C (January first).
MONTHLY_MEAN_C = (4.8, 6.5, 10.0, 15.5, 20.7, 24.6, 28.6, 28.3, 24.9, 19.7, 13.8, 7.5)


def hour_of(local: datetime) -> float:
    """The local time of day in hours, 0 ≤ h < 24."""
    return local.hour + local.minute / 60 + local.second / 3600


def weekend(local: datetime) -> bool:
    """Saturday or Sunday."""
    return local.weekday() >= 5


def plateau(h: float, rise: float, top: float, fall: float, end: float) -> float:
    """0 before `rise`, a cosine ramp up to 1 at `top`, 1 until `fall`, down to 0 at `end`."""
    if h <= rise or h >= end:
        return 0.0
    if h < top:
        return 0.5 - 0.5 * math.cos(math.pi * (h - rise) / (top - rise))
    if h <= fall:
        return 1.0
    return 0.5 + 0.5 * math.cos(math.pi * (h - fall) / (end - fall))


def parking_occupancy(business: bool, local: datetime) -> float:
    """Target share of occupied spaces: by day in business districts, by night elsewhere."""
    h = hour_of(local)
    if business:
        day = plateau(h, 7.0, 9.5, 17.5, 20.0)
        evening = plateau(h, 17.5, 19.5, 21.5, 23.5)
        if weekend(local):
            return 0.10 + 0.45 * plateau(h, 9.0, 12.0, 19.0, 22.0)
        return 0.10 + 0.78 * day + 0.25 * evening * (1 - day)
    away = plateau(h, 6.5, 9.0, 17.0, 20.5)
    if weekend(local):
        away *= 0.5
    return 0.93 - 0.50 * away


def parking_dwell_h(business: bool, local: datetime) -> float:
    """Mean time a car stays, hours: short by day in town, overnight at home."""
    h = hour_of(local)
    if business:
        return 2.0
    return 9.0 if (h >= 19 or h < 7) else 3.0


def ambient_c(local: datetime) -> float:
    """Air temperature: the month's mean plus a day swing peaking at 14:00."""
    return MONTHLY_MEAN_C[local.month - 1] + 4.0 * math.cos(
        2 * math.pi * (hour_of(local) - 14.0) / 24
    )


def in_windows(local: datetime, windows: tuple[tuple[str, str], ...]) -> bool:
    """Whether a local time is inside any of the `HH:MM` windows."""
    hm = f"{local.hour:02d}:{local.minute:02d}"
    return any(start <= hm < end for start, end in windows)


# Percent of a bin filled per hour of an open drop-off window, per category.
FILL_PER_OPEN_H: dict[Category, float] = {
    "wet": 20.0,
    "dry": 14.0,
    "recyclable": 9.0,
    "hazardous": 1.0,
}
# Kilograms in a full bin (a 240 l wheelie bin), per category.
FULL_BIN_KG: dict[Category, float] = {
    "wet": 150.0,
    "dry": 60.0,
    "recyclable": 40.0,
    "hazardous": 30.0,
}
# Local collection times per category (the truck empties the bin).
COLLECTIONS: dict[Category, tuple[float, ...]] = {
    "wet": (9.5, 20.5),
    "dry": (10.0,),
    "recyclable": (10.0,),
    "hazardous": (10.5,),
}


def dropoff_factor(local: datetime, windows: tuple[tuple[str, str], ...]) -> float:
    """How much of the open-window fill rate applies now: a trickle outside the windows."""
    if in_windows(local, windows):
        return 1.0
    h = hour_of(local)
    return 0.06 if 6 <= h < 23 else 0.005


def offhours_dropoffs_per_h(local: datetime, windows: tuple[tuple[str, str], ...]) -> float:
    """Rate of drop-offs the AI camera sees outside opening hours, per hut."""
    if in_windows(local, windows):
        return 0.0
    h = hour_of(local)
    return 0.35 if 6 <= h < 23 else 0.03


def building_load(profile: str, local: datetime) -> float:
    """Load as a share of the contracted capacity, by building use."""
    h = hour_of(local)
    off = weekend(local)
    summer = 1.12 if local.month in (6, 7, 8, 9) else 1.0
    if profile == "office":
        level = 0.15 + (0.15 if off else 0.70) * plateau(h, 7.0, 9.0, 18.0, 21.0)
    elif profile == "mall":
        level = 0.10 + 0.72 * plateau(h, 9.0, 10.5, 21.0, 22.5) * (1.1 if off else 1.0)
    elif profile == "factory":
        level = (0.35 if off else 0.55) + 0.30 * plateau(h, 6.0, 8.0, 20.0, 22.0)
    elif profile == "residential":
        level = (
            0.18 + 0.15 * plateau(h, 6.0, 7.0, 8.0, 9.0) + 0.45 * plateau(h, 17.0, 19.5, 22.5, 24.0)
        )
    elif profile == "hospital":
        level = 0.45 + 0.30 * plateau(h, 7.0, 9.0, 17.0, 20.0)
    else:  # datacenter: flat, cooling follows the weather a little
        level = 0.72 + 0.04 * plateau(h, 10.0, 13.0, 16.0, 19.0)
    return level * summer
