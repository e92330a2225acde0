"""Dependencies shared by the routers: settings, pool, engine, clock, admin auth."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from cityvitals.api.engine import Clock, Engine
from cityvitals.settings import ApiSettings

M = TypeVar("M", bound=BaseModel)

# auto_error=False: a missing or non-Bearer header is ours to answer (401, not 403).
bearer = HTTPBearer(auto_error=False, description="CITYVITALS_ADMIN_TOKEN")

# The dependencies are `async def` although they do not await: FastAPI runs a plain
# `def` dependency on its thread pool, a thread hop (and a GIL hand-over) per request.


async def get_settings(request: Request) -> ApiSettings:
    """The API's settings."""
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_pool(request: Request) -> AsyncConnectionPool[Any]:
    """The connection pool opened in the lifespan."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


async def get_engine(request: Request) -> Engine:
    """The snapshot engine."""
    engine: Engine = request.app.state.engine
    return engine


async def get_clock(request: Request) -> Clock:
    """The clock (injectable for tests)."""
    clock: Clock = request.app.state.clock
    return clock


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool[Any], Depends(get_pool)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ClockDep = Annotated[Clock, Depends(get_clock)]


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 without a bearer token; 403 with a wrong one or when none is configured."""
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="admin endpoint: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.admin_token
    if not expected:
        raise HTTPException(status_code=403, detail="no admin token is configured")
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status_code=403, detail="wrong admin token")


AdminDep = Depends(require_admin)
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token"},
    403: {"description": "Wrong token, or no admin token configured"},
    413: {"description": "Request body larger than CITYVITALS_MAX_BODY_BYTES"},
}


# Query values parsed by `parse_time`, documented as what they are.
DATE_TIME: dict[str, Any] = {"format": "date-time"}


def invalid(loc: tuple[str, ...], msg: str) -> RequestValidationError:
    """A 422 naming the offending parameter, in FastAPI's own error format."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


async def read_json_model(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body after authentication (so 401/403 come first)."""
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise invalid(("body",), f"invalid JSON: {err}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(
            [
                {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in err.errors(include_url=False, include_context=False)
            ]
        ) from None


def parse_time(value: str, loc: tuple[str, ...]) -> datetime:
    """An RFC 3339 query value as an aware UTC datetime (no offset means UTC), or a 422."""
    try:
        ts = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise invalid(loc, "not an RFC 3339 date-time") from None
    return as_utc(ts)


def as_utc(ts: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken as UTC."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)
