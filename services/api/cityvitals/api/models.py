"""Request and response models: the API's OpenAPI schema, with examples."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cityvitals.catalogue import DISTRICT_BY_ID, DISTRICTS

StatusLabel = Literal["normal", "attention", "warning", "critical"]
KindName = Literal["parking", "waste", "energy"]
SiteKind = Literal["parking_lot", "waste_hut", "energy_site"]
DISTRICT_PATTERN = "^(" + "|".join(d.id for d in DISTRICTS) + ")$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# SPEC §4: waste huts open 07:00-09:00 and 18:00-20:00 unless registered otherwise.
DEFAULT_OPENING_HOURS = (("07:00", "09:00"), ("18:00", "20:00"))


class Name(BaseModel):
    """A bilingual name."""

    zh: str
    en: str


class IndicatorOut(BaseModel):
    """One indicator in one scope."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "parking.occupancy_ratio",
                    "name": {"zh": "泊位占用率", "en": "Parking occupancy"},
                    "value": 0.82,
                    "unit": "ratio",
                    "status": "normal",
                    "coverage": 0.97,
                    "data_age_s": 12.5,
                    "stale": False,
                }
            ]
        }
    )

    id: str
    name: Name
    value: float | None = Field(description="null when no device in scope reports")
    unit: str
    status: StatusLabel
    coverage: float | None = Field(
        description="devices that reported within 3 report intervals / devices registered"
    )
    data_age_s: float | None = Field(description="now - newest reading used")
    stale: bool
    by: dict[str, float | None] | None = Field(
        default=None, description="breakdown (deposited kg by category, online ratio by kind)"
    )


class DistrictOut(BaseModel):
    """A district's figures."""

    id: str
    name: Name
    status: StatusLabel
    indicators: list[IndicatorOut]


class VitalsOut(BaseModel):
    """The city snapshot."""

    generated_at: datetime
    status: StatusLabel
    stale: bool = Field(description="true while the database is unreachable")
    indicators: list[IndicatorOut]
    districts: list[DistrictOut]


class SiteOut(BaseModel):
    """A parking lot, waste hut or energy site."""

    id: str
    kind: SiteKind
    name: str | None
    status: StatusLabel
    indicators: list[IndicatorOut]


class DistrictDetailOut(DistrictOut):
    """One district with its sites."""

    generated_at: datetime
    stale: bool
    sites: list[SiteOut]


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
    """A registry entry (SPEC §4); `PUT` replaces the whole entry."""

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


class DeviceOut(BaseModel):
    """A registry entry with the device's liveness."""

    device_id: str
    kind: KindName
    district: str | None
    site: str | None
    name: str | None
    lat: float | None
    lon: float | None
    report_interval_s: int | None
    opening_hours: list[OpeningHours] | None
    key_consumer: bool
    contract_kw: float | None
    auto_registered: bool
    created_at: datetime
    updated_at: datetime
    last_seen: datetime | None = Field(description="receive time of the newest message")
    online: bool
    retained_status: Literal["online", "offline"] | None


class DevicePage(BaseModel):
    """One page of the registry, in device id order."""

    items: list[DeviceOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class ImportFailure(BaseModel):
    """A row that was not imported, and why."""

    row: int = Field(description="1-based data row (CSV: excluding the header)")
    device_id: str | None
    errors: list[str]


class ImportReport(BaseModel):
    """What an import did."""

    imported: int
    failed: list[ImportFailure]


class AlertOut(BaseModel):
    """An alert, active or cleared."""

    id: int
    indicator: str
    entity: str
    district: str | None
    severity: Literal["attention", "warning", "critical"]
    value: float | None = Field(description="the value when opened or last escalated")
    threshold: float | None
    state: Literal["active", "cleared"]
    opened_at: datetime
    updated_at: datetime
    cleared_at: datetime | None


class AlertList(BaseModel):
    """Alerts, newest first."""

    items: list[AlertOut]


class Point(BaseModel):
    """One bucket of a series."""

    ts: datetime
    value: float | None
    min: float | None
    max: float | None


class SeriesOut(BaseModel):
    """An indicator's history in buckets of `step_s`."""

    indicator: str
    district: str
    unit: str
    step_s: int
    source: Literal["samples", "rollup"]
    from_: datetime = Field(alias="from")
    to: datetime
    points: list[Point]

    model_config = ConfigDict(populate_by_name=True)


class DeadLetterOut(BaseModel):
    """A rejected message."""

    id: int
    topic: str
    reason: str
    detail: str
    received_at: datetime
    collector: str | None
    replayed_at: datetime | None
    replay_result: str | None
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    size_bytes: int


class DeadLetterList(BaseModel):
    """Dead letters, newest first."""

    items: list[DeadLetterOut]


class ReplayReport(BaseModel):
    """What a replay did."""

    replayed: int
    stored: int
    duplicate: int
    rejected: dict[str, int] = Field(description="still rejected, per reason")


class Problem(BaseModel):
    """An error."""

    detail: str
