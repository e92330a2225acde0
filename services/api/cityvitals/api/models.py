"""Request and response models: the API's OpenAPI schema, with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cityvitals.catalogue import DISTRICTS

# What a registry entry is, and what an import or a replay reports, are the library's
# (the CLI and the simulator use them too); the API serves them as they are.
from cityvitals.registry.models import DEVICE_ID_PATTERN as DEVICE_ID_PATTERN
from cityvitals.registry.models import DeviceIn as DeviceIn
from cityvitals.registry.models import ImportReport as ImportReport
from cityvitals.registry.models import KindName as KindName
from cityvitals.registry.models import OpeningHours
from cityvitals.replay import ReplayReport as ReplayReport

StatusLabel = Literal["normal", "attention", "warning", "critical"]
SiteKind = Literal["parking_lot", "waste_hut", "energy_site"]
DISTRICT_PATTERN = "^(" + "|".join(d.id for d in DISTRICTS) + ")$"


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
    value: float | None = Field(
        description="rounded to the unit's precision (ratio 4 decimals, kW/kWh/kg 0.01, "
        "% 0.1, t CO2 0.001, s 0.01, count whole); null when no device in scope reports"
    )
    unit: str
    status: StatusLabel
    coverage: float | None = Field(
        description="devices that reported within 3 report intervals / devices registered "
        "(4 decimals)"
    )
    data_age_s: float | None = Field(
        description="now - the `ts` of the newest reading used, to 0.01 s"
    )
    stale: bool
    by: dict[str, float | None] | None = Field(
        default=None,
        description="breakdown in the indicator's unit and precision (deposited kg by "
        "category, online ratio by kind)",
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
    last_seen: datetime | None = Field(
        description="time of the newest message by its ts (its receive time where it had none)"
    )
    online: bool
    retained_status: Literal["online", "offline"] | None


class DevicePage(BaseModel):
    """One page of the registry, in device id order."""

    items: list[DeviceOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


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


class Problem(BaseModel):
    """An error."""

    detail: str
