"""Configuration (docs/running.md, Configuration): every class reads `CITYVITALS_*`, every
default works on a laptop, and a value outside its grammar or range is refused."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cityvitals.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_MQTT_URL,
    ApiSettings,
    CollectorSettings,
    CommonSettings,
    LimitSettings,
    MigrateSettings,
    MqttTarget,
    SimulatorSettings,
    parse_mqtt_url,
)

CLASSES: tuple[type[CommonSettings], ...] = (
    CommonSettings,
    LimitSettings,
    MigrateSettings,
    CollectorSettings,
    ApiSettings,
    SimulatorSettings,
)

# The defaults of docs/running.md's tables (the client id's default is computed by the
# collector from an empty setting).
DEFAULTS: dict[str, Any] = {
    "database_url": "postgresql://cityvitals:cityvitals@127.0.0.1:54320/cityvitals",
    "mqtt_url": "mqtt://127.0.0.1:18830",
    "topic_prefix": "city",
    "local_tz": "Asia/Shanghai",
    "log_level": "INFO",
    "log_format": "auto",
    "max_payload_bytes": 8192,
    "clock_skew_s": 300.0,
    "too_old_s": 604800.0,
    "chunk_interval": "1 day",
    "compress_after": "7 days",
    "retain_raw": "90 days",
    "retain_rollups": "2 years",
    "timescale": "auto",
    "client_id": "",
    "share_group": "cityvitals",
    "shared_subscription": "auto",
    "startup_wait_s": 15.0,
    "drain_timeout_s": 20.0,
    "mqtt_tuned": True,
    "receive_maximum": 20000,
    "session_expiry_s": 86400,
    "keepalive_s": 30,
    "batch_max": 5000,
    "batch_age_ms": 200,
    "reconnect_min_s": 0.5,
    "reconnect_max_s": 30.0,
    "db_retry_min_s": 0.5,
    "db_retry_max_s": 15.0,
    "metrics_host": "127.0.0.1",
    "metrics_port": 9464,
    "api_host": "127.0.0.1",
    "api_port": 8080,
    "admin_token": None,
    "co2_kg_per_kwh": 0.42,
    "snapshot_interval_s": 1.0,
    "slow_refresh_interval_s": 30.0,
    "max_body_bytes": 10485760,
    "pool_max": 8,
    "thresholds_file": None,
    "api_url": "http://127.0.0.1:8080",
}

# Per setting: a value other than the default as the environment spells it, and as read.
SAMPLES: dict[str, tuple[str, Any]] = {
    "database_url": (
        "postgres://u:p@db.example:5432/vitals",
        "postgres://u:p@db.example:5432/vitals",
    ),
    "mqtt_url": ("mqtts://broker.example:8884", "mqtts://broker.example:8884"),
    "topic_prefix": ("sh/city", "sh/city"),
    "local_tz": ("Europe/Berlin", "Europe/Berlin"),
    "log_level": ("DEBUG", "DEBUG"),
    "log_format": ("json", "json"),
    "max_payload_bytes": ("4096", 4096),
    "clock_skew_s": ("12.5", 12.5),
    "too_old_s": ("3600", 3600.0),
    "chunk_interval": ("12 hours", "12 hours"),
    "compress_after": ("3 days", "3 days"),
    "retain_raw": ("30 days", "30 days"),
    "retain_rollups": ("5 years", "5 years"),
    "timescale": ("off", "off"),
    "client_id": ("collector-a", "collector-a"),
    "share_group": ("group2", "group2"),
    "shared_subscription": ("on", "on"),
    "startup_wait_s": ("0", 0.0),
    "drain_timeout_s": ("2.5", 2.5),
    "mqtt_tuned": ("false", False),
    "receive_maximum": ("65535", 65535),
    "session_expiry_s": ("0", 0),
    "keepalive_s": ("5", 5),
    "batch_max": ("1", 1),
    "batch_age_ms": ("50", 50),
    "reconnect_min_s": ("1", 1.0),
    "reconnect_max_s": ("60", 60.0),
    "db_retry_min_s": ("0.25", 0.25),
    "db_retry_max_s": ("5", 5.0),
    "metrics_host": ("10.0.0.5", "10.0.0.5"),
    "metrics_port": ("0", 0),
    "api_host": ("10.0.0.6", "10.0.0.6"),
    "api_port": ("8081", 8081),
    "admin_token": ("s3cret", "s3cret"),
    "co2_kg_per_kwh": ("0.5", 0.5),
    "snapshot_interval_s": ("2", 2.0),
    "slow_refresh_interval_s": ("60", 60.0),
    "max_body_bytes": ("1024", 1024),
    "pool_max": ("2", 2),
    "thresholds_file": ("/etc/cityvitals/thresholds.json", "/etc/cityvitals/thresholds.json"),
    "api_url": ("http://api.example:9000", "http://api.example:9000"),
}

S = TypeVar("S", bound=CommonSettings)

FIELDS = [(cls, name) for cls in CLASSES for name in cls.model_fields]
# Hypothesis runs the examples of one test in one environment the fixture cleaned once.
ONE_ENVIRONMENT = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `CITYVITALS_*` variable from outside, and a working directory without `.env`."""
    for name in list(os.environ):
        if name.upper().startswith("CITYVITALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def load(cls: type[S], **values: Any) -> S:
    return cls(_env_file=None, **values)


def refused_field(err: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {str(e["loc"][0]) for e in err.value.errors()}


def test_every_setting_has_a_documented_default_and_a_sample() -> None:
    names = {name for _, name in FIELDS}
    assert names == DEFAULTS.keys()
    assert names == SAMPLES.keys()


@pytest.mark.parametrize(("cls", "name"), FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
def test_every_setting_has_its_default_without_any_variable(
    cls: type[CommonSettings], name: str
) -> None:
    assert getattr(load(cls), name) == DEFAULTS[name]


@pytest.mark.parametrize(("cls", "name"), FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
def test_every_setting_is_read_from_its_cityvitals_variable(
    cls: type[CommonSettings], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, expected = SAMPLES[name]
    monkeypatch.setenv(f"CITYVITALS_{name.upper()}", raw)
    assert getattr(load(cls), name) == expected


@pytest.mark.parametrize("cls", CLASSES)
def test_a_variable_without_the_prefix_is_not_read(
    cls: type[CommonSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPIC_PREFIX", "elsewhere")
    monkeypatch.setenv("DATABASE_URL", "postgresql://other@host/db")
    loaded = load(cls)
    assert loaded.topic_prefix == "city"
    assert loaded.database_url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize("cls", CLASSES)
def test_unknown_cityvitals_variables_are_ignored(
    cls: type[CommonSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_NO_SUCH_SETTING", "whatever")
    assert load(cls).topic_prefix == "city"


def test_the_dot_env_of_the_working_directory_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "CITYVITALS_TOPIC_PREFIX=from/file\nCITYVITALS_API_PORT=9001\n", encoding="utf-8"
    )
    from_file = ApiSettings()
    assert from_file.topic_prefix == "from/file"
    assert from_file.api_port == 9001
    monkeypatch.setenv("CITYVITALS_API_PORT", "9002")
    assert ApiSettings().api_port == 9002
    assert ApiSettings().topic_prefix == "from/file"


def test_settings_are_frozen() -> None:
    loaded = load(CollectorSettings)
    with pytest.raises(ValidationError):
        loaded.receive_maximum = 5  # type: ignore[misc]


def test_the_default_broker_and_database_are_the_embedded_stack() -> None:
    loaded = load(CommonSettings)
    assert loaded.mqtt == MqttTarget(host="127.0.0.1", port=18830)
    assert loaded.mqtt_url == DEFAULT_MQTT_URL
    assert loaded.psycopg_dsn == DEFAULT_DATABASE_URL


# MQTT URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttTarget(host="broker", port=1883)),
        ("mqtt://broker:1884", MqttTarget(host="broker", port=1884)),
        ("mqtts://broker", MqttTarget(host="broker", port=8883, tls=True)),
        ("mqtts://broker:8884", MqttTarget(host="broker", port=8884, tls=True)),
        ("tcp://broker", MqttTarget(host="broker", port=1883)),
        ("ssl://broker", MqttTarget(host="broker", port=8883, tls=True)),
        ("mqtt://10.1.2.3:1", MqttTarget(host="10.1.2.3", port=1)),
        ("mqtt://[::1]:65535", MqttTarget(host="::1", port=65535)),
        ("mqtt://u@broker", MqttTarget(host="broker", port=1883, username="u")),
        (
            "mqtt://u:p@broker:1",
            MqttTarget(host="broker", port=1, username="u", password="p"),
        ),
        (
            "mqtts://op%40city:p%3Aw%2Fd%25@broker",
            MqttTarget(host="broker", port=8883, username="op@city", password="p:w/d%", tls=True),
        ),
        (
            "mqtt://%E7%94%A8%E6%88%B7:%E5%AF%86@broker",
            MqttTarget(host="broker", port=1883, username="用户", password="密"),
        ),
    ],
)
def test_mqtt_url_splits_into_host_port_credentials_and_tls(url: str, expected: MqttTarget) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://broker", "ws://broker:9001", "amqp://broker", "broker:1883", "", "mqtt//broker"]
)
def test_mqtt_url_with_another_scheme_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"mqtt:// or mqtts://"):
        parse_mqtt_url(url)


@pytest.mark.parametrize(
    "url", ["mqtt://", "mqtts://", "mqtt:///path", "mqtt://u:p@:1883", "mqtt://:1"]
)
def test_mqtt_url_without_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="no host"):
        parse_mqtt_url(url)


@pytest.mark.parametrize("url", ["mqtt://broker:65536", "mqtt://broker:port", "mqtt://broker:-1"])
def test_mqtt_url_with_a_port_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="Port"):
        parse_mqtt_url(url)


@given(
    host=st.text(
        alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20
    ).filter(lambda h: not h.startswith("-")),
    port=st.integers(min_value=1, max_value=65535),
    tls=st.booleans(),
)
def test_any_host_and_port_are_read_back(host: str, port: int, tls: bool) -> None:
    scheme = "mqtts" if tls else "mqtt"
    assert parse_mqtt_url(f"{scheme}://{host}:{port}") == MqttTarget(host=host, port=port, tls=tls)


credentials = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)


@given(username=credentials, password=credentials)
def test_any_percent_encoded_username_and_password_are_read_back_decoded(
    username: str, password: str
) -> None:
    url = f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@broker:1883"
    target = parse_mqtt_url(url)
    assert (target.username, target.password) == (username, password)
    assert (target.host, target.port) == ("broker", 1883)


def test_mqtt_url_variable_is_checked_when_read_and_split_on_demand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CITYVITALS_MQTT_URL", "mqtts://op:pw@broker.example")
    assert load(CollectorSettings).mqtt == MqttTarget(
        host="broker.example", port=8883, username="op", password="pw", tls=True
    )
    monkeypatch.setenv("CITYVITALS_MQTT_URL", "http://broker.example")
    with pytest.raises(ValidationError) as err:
        load(CollectorSettings)
    assert refused_field(err) == {"mqtt_url"}


# Database URL


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql://u:p@db:5432/x"),
        ("postgres://u@db/x", "postgres://u@db/x"),
        ("postgresql+psycopg://u:p@db/x", "postgresql://u:p@db/x"),
    ],
)
def test_postgres_database_urls_are_accepted_and_given_to_libpq_plain(
    url: str, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_DATABASE_URL", url)
    loaded = load(MigrateSettings)
    assert loaded.database_url == url
    assert loaded.psycopg_dsn == dsn


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@db/x",
        "sqlite:///vitals.db",
        "postgresql+asyncpg://u@db/x",
        "db:5432",
        "",
        "host=db dbname=x",
        " postgresql://u@db/x",
    ],
)
def test_database_url_that_is_not_postgres_is_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_DATABASE_URL", url)
    with pytest.raises(ValidationError, match="postgresql://") as err:
        load(CommonSettings)
    assert refused_field(err) == {"database_url"}


# Topic prefix


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ("city", "city"),
        ("sh/city", "sh/city"),
        ("a/b/city", "a/b/city"),
        ("city/", "city"),
        ("/sh/city/", "sh/city"),
        ("ci$ty", "ci$ty"),
    ],
)
def test_topic_prefix_of_plain_levels_is_accepted_without_outer_slashes(
    raw: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_TOPIC_PREFIX", raw)
    assert load(CollectorSettings).topic_prefix == prefix


@pytest.mark.parametrize(
    "raw", ["#", "+", "city/#", "city/+/x", "ci+ty", "c#", "$SYS", "$share/g/city", "$", ""]
)
def test_topic_prefix_with_a_wildcard_or_leading_dollar_is_refused(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_TOPIC_PREFIX", raw)
    with pytest.raises(ValidationError, match="TOPIC_PREFIX") as err:
        load(CollectorSettings)
    assert refused_field(err) == {"topic_prefix"}


@ONE_ENVIRONMENT
@given(
    head=st.text(max_size=10),
    wildcard=st.sampled_from("#+"),
    tail=st.text(max_size=10),
)
def test_any_topic_prefix_holding_a_wildcard_is_refused(
    head: str, wildcard: str, tail: str
) -> None:
    with pytest.raises(ValidationError, match="TOPIC_PREFIX"):
        load(CommonSettings, topic_prefix=f"{head}{wildcard}{tail}")


@ONE_ENVIRONMENT
@given(rest=st.text(max_size=20))
def test_any_topic_prefix_starting_with_dollar_is_refused(rest: str) -> None:
    with pytest.raises(ValidationError, match="TOPIC_PREFIX"):
        load(CommonSettings, topic_prefix=f"${rest}")


@ONE_ENVIRONMENT
@given(
    levels=st.lists(
        st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=10),
        min_size=1,
        max_size=4,
    )
)
def test_any_topic_prefix_of_plain_levels_is_kept_as_given(levels: list[str]) -> None:
    prefix = "/".join(levels)
    assert load(CommonSettings, topic_prefix=prefix).topic_prefix == prefix


# Local time zone


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York"])
def test_local_tz_that_is_an_iana_zone_is_accepted(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_LOCAL_TZ", zone)
    assert load(ApiSettings).local_tz == zone


@pytest.mark.parametrize(
    "zone",
    [
        "Nowhere/City",
        "Asia/Peking/Central",
        "+08:00",
        "CST+8",
        "../../etc/passwd",
        "/etc/localtime",
        "Asia/",
        "",
    ],
)
def test_local_tz_that_is_not_an_iana_zone_is_refused(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYVITALS_LOCAL_TZ", zone)
    with pytest.raises(ValidationError, match="IANA time zone") as err:
        load(ApiSettings)
    assert refused_field(err) == {"local_tz"}


# Closed sets


@pytest.mark.parametrize(
    ("cls", "name", "allowed", "refused"),
    [
        (
            CollectorSettings,
            "shared_subscription",
            ["auto", "on", "off"],
            ["yes", "true", "1", "", "shared"],
        ),
        (MigrateSettings, "timescale", ["auto", "on", "off"], ["yes", "timescaledb", ""]),
        (CommonSettings, "log_format", ["json", "console", "auto"], ["text", "JSONL", ""]),
    ],
)
def test_closed_set_settings_accept_their_values_only(
    cls: type[CommonSettings],
    name: str,
    allowed: list[str],
    refused: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable = f"CITYVITALS_{name.upper()}"
    for value in allowed:
        monkeypatch.setenv(variable, value)
        assert getattr(load(cls), name) == value
    for value in refused:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValidationError) as err:
            load(cls)
        assert refused_field(err) == {name}, value


def test_an_empty_share_group_means_a_plain_subscription(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CITYVITALS_SHARE_GROUP", "")
    assert load(CollectorSettings).share_group == ""


# Numeric ranges: (class, setting, the outermost accepted values, the nearest refused ones)
RANGES: list[tuple[type[CommonSettings], str, list[str], list[str]]] = [
    (CollectorSettings, "receive_maximum", ["1", "65535"], ["0", "65536", "-1"]),
    (CollectorSettings, "metrics_port", ["0", "65535"], ["-1", "65536"]),
    (ApiSettings, "api_port", ["0", "65535"], ["-1", "65536"]),
    (CollectorSettings, "keepalive_s", ["5"], ["4"]),
    (CollectorSettings, "session_expiry_s", ["0"], ["-1"]),
    (CollectorSettings, "batch_max", ["1"], ["0"]),
    (CollectorSettings, "batch_age_ms", ["1"], ["0"]),
    (CollectorSettings, "startup_wait_s", ["0"], ["-0.1"]),
    (CollectorSettings, "drain_timeout_s", ["0.001"], ["0"]),
    (LimitSettings, "max_payload_bytes", ["1"], ["0"]),
    (LimitSettings, "clock_skew_s", ["0"], ["-1"]),
    (LimitSettings, "too_old_s", ["0.5"], ["0"]),
    (ApiSettings, "co2_kg_per_kwh", ["0"], ["-0.01"]),
    (ApiSettings, "snapshot_interval_s", ["0.01"], ["0"]),
    (ApiSettings, "slow_refresh_interval_s", ["0.01"], ["0"]),
    (ApiSettings, "max_body_bytes", ["1024"], ["1023"]),
    (ApiSettings, "pool_max", ["1"], ["0"]),
]


@pytest.mark.parametrize(("cls", "name", "accepted", "refused"), RANGES, ids=[r[1] for r in RANGES])
def test_numeric_setting_is_refused_outside_its_range(
    cls: type[CommonSettings],
    name: str,
    accepted: list[str],
    refused: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable = f"CITYVITALS_{name.upper()}"
    for value in accepted:
        monkeypatch.setenv(variable, value)
        assert getattr(load(cls), name) == float(value)
    for value in refused:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValidationError) as err:
            load(cls)
        assert refused_field(err) == {name}, value


@pytest.mark.parametrize(
    ("cls", "name"), [(CollectorSettings, "receive_maximum"), (ApiSettings, "api_port")]
)
def test_numeric_setting_that_is_not_a_number_is_refused(
    cls: type[CommonSettings], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"CITYVITALS_{name.upper()}", "many")
    with pytest.raises(ValidationError) as err:
        load(cls)
    assert refused_field(err) == {name}


@ONE_ENVIRONMENT
@given(value=st.integers(min_value=-(2**40), max_value=2**40))
def test_receive_maximum_is_accepted_exactly_from_1_to_65535(value: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYVITALS_RECEIVE_MAXIMUM", str(value))
        if 1 <= value <= 65535:
            assert load(CollectorSettings).receive_maximum == value
        else:
            with pytest.raises(ValidationError):
                load(CollectorSettings)


@ONE_ENVIRONMENT
@given(
    value=st.integers(min_value=-(2**40), max_value=2**40),
    setting=st.sampled_from([(CollectorSettings, "metrics_port"), (ApiSettings, "api_port")]),
)
def test_ports_are_accepted_exactly_from_0_to_65535(
    value: int, setting: tuple[type[CommonSettings], str]
) -> None:
    cls, name = setting
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"CITYVITALS_{name.upper()}", str(value))
        if 0 <= value <= 65535:
            assert getattr(load(cls), name) == value
        else:
            with pytest.raises(ValidationError):
                load(cls)


@pytest.mark.parametrize("value", ["/$SYS", "/", "//", "a//b"])
def test_a_prefix_is_judged_after_its_slashes_are_stripped(value: str) -> None:
    with pytest.raises(ValidationError, match="TOPIC_PREFIX"):
        CommonSettings(topic_prefix=value, _env_file=None)


def test_an_mqtt_url_with_port_0_is_refused() -> None:
    with pytest.raises(ValueError, match="port 0"):
        parse_mqtt_url("mqtt://h:0")
