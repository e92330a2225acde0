"""`/v1/devices`: the registry, paged by device id; writes need the admin token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from cityvitals.api.deps import (
    AUTH_RESPONSES,
    AdminDep,
    ClockDep,
    PoolDep,
    invalid,
    read_json_model,
)
from cityvitals.api.models import (
    DEVICE_ID_PATTERN,
    DISTRICT_PATTERN,
    DeviceIn,
    DeviceOut,
    DevicePage,
    ImportReport,
    KindName,
    Problem,
)
from cityvitals.api.services import devices
from cityvitals.registry.parse import format_for_content_type

router = APIRouter(prefix="/v1/devices", tags=["devices"])
DeviceId = Annotated[str, Path(min_length=1, max_length=200, examples=["pk-xuhui-0001"])]
# A new registry entry must have an id a device could publish under (docs/wire.md).
NewDeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, examples=["pk-xuhui-0001"])]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown device"}
}
IMPORT_EXAMPLE_CSV = (
    "device_id,kind,district,site,name,lat,lon,report_interval_s,opening_hours,"
    "key_consumer,contract_kw\n"
    "hut-xh-0001,waste,xuhui,Tianlin 3,Hut 3-A,31.17,121.43,,07:00-09:00;18:00-20:00,,\n"
    "em-pd-0001,energy,pudong,Tower 1,Main meter,31.23,121.50,60,,true,800\n"
)


@router.get("", response_model=DevicePage, summary="The registry with liveness, paged")
async def list_devices(
    pool: PoolDep,
    clock: ClockDep,
    kind: KindName | None = None,
    district: Annotated[
        str | None,
        Query(
            pattern=DISTRICT_PATTERN[:-2] + "|unassigned)$",
            description="a district id, or `unassigned`",
        ),
    ] = None,
    online: bool | None = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Devices in id order; pass `next_cursor` back as `cursor` for the next page."""
    return await devices.list_devices(
        pool, now=clock(), kind=kind, district=district, online=online, cursor=cursor, limit=limit
    )


@router.get("/{device_id}", response_model=DeviceOut, responses=NOT_FOUND, summary="One device")
async def get_device(pool: PoolDep, clock: ClockDep, device_id: DeviceId) -> dict[str, Any]:
    """A registry entry with last seen time and online state."""
    row = await devices.get_device(pool, device_id=device_id, now=clock())
    if row is None:
        raise HTTPException(status_code=404, detail=f"unknown device {device_id!r}")
    return row


@router.put(
    "/{device_id}",
    response_model=DeviceOut,
    dependencies=[AdminDep],
    responses={
        **AUTH_RESPONSES,
        201: {"model": DeviceOut, "description": "Registered"},
        409: {"model": Problem, "description": "Registered with another kind"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeviceIn"}}},
        }
    },
    summary="Register or replace a device (admin)",
)
async def put_device(
    request: Request, pool: PoolDep, clock: ClockDep, device_id: NewDeviceId
) -> JSONResponse:
    """Create (201) or replace (200) a registry entry; changing a device's kind is a 409."""
    dev = await read_json_model(request, DeviceIn)
    if dev.device_id is not None and dev.device_id != device_id:
        raise invalid(("body", "device_id"), "differs from the device id in the path")
    result = await devices.register_device(pool, device_id=device_id, device=dev, now=clock())
    if result.device is None:
        raise HTTPException(
            status_code=409,
            detail="the device is registered with another kind; delete it first",
        )
    row = result.device
    body = DeviceOut.model_validate(row).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if result.created else 200)


@router.delete(
    "/{device_id}",
    status_code=204,
    dependencies=[AdminDep],
    responses={**AUTH_RESPONSES, **NOT_FOUND},
    summary="Remove a device from the registry (admin)",
)
async def delete_device(pool: PoolDep, device_id: DeviceId) -> Response:
    """Remove the registry entry; its history stays, and a new message re-registers it."""
    if not await devices.delete_device(pool, device_id=device_id):
        raise HTTPException(status_code=404, detail=f"unknown device {device_id!r}")
    return Response(status_code=204)


@router.post(
    "/import",
    response_model=ImportReport,
    dependencies=[AdminDep],
    responses={
        **AUTH_RESPONSES,
        415: {"model": Problem, "description": "Neither CSV nor JSON"},
        422: {"description": "The body is not CSV with a header, or not a JSON array"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": IMPORT_EXAMPLE_CSV,
                },
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceIn"}},
                },
            },
        }
    },
    summary="Bulk import (admin): CSV or JSON by Content-Type; good rows stored",
)
async def import_devices(request: Request, pool: PoolDep, clock: ClockDep) -> ImportReport:
    """Validate every row; store the good ones and report which rows failed and why.

    CSV: a header row naming registry fields (`device_id` required); `opening_hours`
    as `07:00-09:00;18:00-20:00`. JSON: an array of device objects (each with
    `device_id`), or `{"devices": [...]}`. Each row replaces its device's entry.
    """
    fmt = format_for_content_type(request.headers.get("content-type", ""))
    if fmt is None:
        raise HTTPException(status_code=415, detail="send text/csv or application/json")
    try:
        return await devices.import_devices(pool, body=request.stream(), fmt=fmt, now=clock())
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError among them
        raise invalid(("body",), str(err)[:300]) from None
