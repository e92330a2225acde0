"""Why a message was rejected: the reason codes of docs/wire.md, one enum."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    """A dead letter's reason code."""

    UNKNOWN_KIND = "unknown_kind"
    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    OUT_OF_RANGE = "out_of_range"
    CLOCK_SKEW = "clock_skew"
    TOO_OLD = "too_old"
    # Passed every check above, and the database still refused it (its error is the
    # detail): a refusal of the data, never mistaken for an outage.
    UNSTORABLE = "unstorable"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Expected bad input, as a value: the reason and a detail naming the field."""

    reason: Reason
    detail: str
