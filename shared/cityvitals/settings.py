"""Configuration: one settings class per service, all read from `CITYVITALS_*` and `.env`."""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The defaults are the ports of the embedded stack that `make run` starts, so every
# service works on a laptop without any variable set.
DEFAULT_DATABASE_URL = "postgresql://cityvitals:cityvitals@127.0.0.1:54320/cityvitals"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:18830"


class MqttTarget(BaseModel):
    """A broker address split out of `mqtt://[user:password@]host:port`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _port(port: int | None, default: int, url: str) -> int:
    if port is None:
        return default
    if port == 0:
        raise ValueError(f"MQTT URL has port 0: {url!r}")
    return port


def parse_mqtt_url(url: str) -> MqttTarget:
    """Split an `mqtt://` or `mqtts://` URL into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    return MqttTarget(
        host=parts.hostname,
        port=_port(parts.port, 8883 if tls else 1883, url),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class CommonSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(
        env_prefix="CITYVITALS_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    mqtt_url: str = DEFAULT_MQTT_URL
    topic_prefix: str = "city"
    local_tz: str = "Asia/Shanghai"
    log_level: str = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("local_tz")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("LOCAL_TZ must be an IANA time zone such as Asia/Shanghai") from None
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or any(c in value for c in "#+") or value.startswith("$") or "//" in value:
            raise ValueError("TOPIC_PREFIX must be a plain topic level path")
        return value

    @property
    def mqtt(self) -> MqttTarget:
        """The broker address."""
        return parse_mqtt_url(self.mqtt_url)

    @property
    def psycopg_dsn(self) -> str:
        """The database URL in the form libpq accepts."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class LimitSettings(CommonSettings):
    """Validation limits shared by the collector and dead-letter replay (docs/wire.md)."""

    max_payload_bytes: int = Field(default=8192, ge=1)
    clock_skew_s: float = Field(default=300.0, ge=0)
    too_old_s: float = Field(default=7 * 86400.0, gt=0)


class MigrateSettings(CommonSettings):
    """Settings of `cityvitals migrate`."""

    # TimescaleDB policies; ignored on plain PostgreSQL.
    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retain_raw: str = "90 days"
    retain_rollups: str = "2 years"
    timescale: Literal["auto", "on", "off"] = "auto"


class CollectorSettings(LimitSettings):
    """Settings of `cityvitals collector`."""

    client_id: str = ""
    share_group: str = "cityvitals"
    # `auto`: the shared subscription where the broker keeps it across its own restart
    # (Mosquitto 2.1 and later, with persist-sqlite), a plain persistent one elsewhere;
    # `on` always shares (with a warning where that can lose); `off` never does.
    shared_subscription: Literal["auto", "on", "off"] = "auto"
    # How long start-up waits for an unreachable broker or database before giving up.
    startup_wait_s: float = Field(default=15.0, ge=0)
    # On SIGTERM, how long a collector leaving its group may take to store what the
    # broker already queued for it.
    drain_timeout_s: float = Field(default=20.0, gt=0)
    # The tuned paho receive path and batched PUBACKs (cityvitals.mqttfast); `false`
    # runs stock paho, for comparison in the benchmarks.
    mqtt_tuned: bool = True
    # MQTT 5 Receive Maximum (docs/wire.md): the unacknowledged window, and so the bound
    # of what the collector holds in memory while the database is away.
    receive_maximum: int = Field(default=20000, ge=1, le=65535)
    session_expiry_s: int = Field(default=86400, ge=0)
    keepalive_s: int = Field(default=30, ge=5)
    batch_max: int = Field(default=5000, ge=1)
    batch_age_ms: int = Field(default=200, ge=1)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    db_retry_min_s: float = 0.5
    db_retry_max_s: float = 15.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)


class ApiSettings(LimitSettings):
    """Settings of `cityvitals api`."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    # No default: write endpoints answer 403 until a token is configured.
    admin_token: str | None = None
    co2_kg_per_kwh: float = Field(default=0.42, ge=0)
    snapshot_interval_s: float = Field(default=1.0, gt=0)
    slow_refresh_interval_s: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    pool_max: int = Field(default=8, ge=1)
    # Path to a JSON file that overrides catalogue thresholds, per deployment.
    thresholds_file: str | None = None


class SimulatorSettings(CommonSettings):
    """Settings of `cityvitals simulate`."""

    api_url: str = "http://127.0.0.1:8080"
    admin_token: str | None = None
