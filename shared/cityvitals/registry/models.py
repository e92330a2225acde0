"""What a registry entry is (docs/registry.md), and what an import reports."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cityvitals.catalogue import DISTRICT_BY_ID
from cityvitals.topics import DEVICE_ID_RE

KindName = Literal["parking", "waste", "energy"]
# A registered id is one a device could publish under (the topic grammar's).
DEVICE_ID_PATTERN = f"^{DEVICE_ID_RE.pattern}$"
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# docs/registry.md: waste huts open 07:00-09:00 and 18:00-20:00 unless registered otherwise.
DEFAULT_OPENING_HOURS = (("07:00", "09:00"), ("18:00", "20:00"))


class OpeningHours(BaseModel):
    """One opening window of a waste hut, local time."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"open": "07:00", "close": "09:00"}]}
    )

    open: str = Field(pattern=HHMM.pattern)
    close: str = Field(pattern=HHMM.pattern)

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, value: object) -> object:
        # Integrators also send a window as a pair: ["07:00", "09:00"].
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"open": value[0], "close": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> OpeningHours:
        if self.open >= self.close:
            raise ValueError("open must be before close")
        return self


class DeviceIn(BaseModel):
    """A registry entry (docs/registry.md); `PUT` replaces the whole entry."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "waste",
                    "district": "xuhui",
                    "site": "Tianlin No. 3 compound",
                    "name": "Hut 3-A",
                    "lat": 31.17,
                    "lon": 121.43,
                    "opening_hours": [
                        {"open": "07:00", "close": "09:00"},
                        {"open": "18:00", "close": "20:00"},
                    ],
                }
            ]
        },
    )

    device_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    kind: KindName
    district: str | None = Field(default=None, description="a district id; null = unassigned")
    site: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    report_interval_s: int | None = Field(default=None, ge=1, le=86400)
    opening_hours: list[OpeningHours] | None = Field(default=None, max_length=12)
    key_consumer: bool = False
    contract_kw: float | None = Field(default=None, ge=0, le=1e7)

    @field_validator("site", "name")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL; refused here, the row fails alone.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("district")
    @classmethod
    def _known_district(cls, value: str | None) -> str | None:
        if value is not None and value not in DISTRICT_BY_ID:
            raise ValueError(f"unknown district {value!r}")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> DeviceIn:
        if self.opening_hours is not None and self.kind != "waste":
            raise ValueError("opening_hours applies to waste huts only")
        if (self.key_consumer or self.contract_kw is not None) and self.kind != "energy":
            raise ValueError("key_consumer and contract_kw apply to energy meters only")
        return self


class ImportFailure(BaseModel):
    """A row that was not imported, and why."""

    row: int = Field(description="1-based data row (CSV: excluding the header)")
    device_id: str | None
    errors: list[str]


class ImportReport(BaseModel):
    """What an import did."""

    imported: int
    failed: list[ImportFailure]
