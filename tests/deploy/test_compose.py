"""docker-compose.yml, the Dockerfile and the env example, checked without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cityvitals import settings as settings_module

from .promql import DEPLOY, ROOT, load_yaml

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "env.example"


def compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML merge keys resolved, as Compose does)."""
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def services() -> dict[str, dict[str, Any]]:
    """The Compose services by name."""
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_example() -> dict[str, str]:
    """The variables of deploy/env.example and their example values."""
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_expected_services_are_there() -> None:
    assert set(services()) == {
        "timescaledb",
        "mosquitto",
        "migrate",
        "collector-1",
        "collector-2",
        "api",
        "simulator",
        "prometheus",
        "grafana",
    }


def _image(service: dict[str, Any]) -> str:
    image = str(service["image"])
    # `${VAR:-default}`: the default is what runs unless the operator pins another.
    if m := re.fullmatch(r"\$\{\w+:-([^}]+)\}", image):
        image = m.group(1)
    return image


@pytest.mark.parametrize("name", sorted(services()))
def test_image_is_pinned_to_a_version(name: str) -> None:
    image = _image(services()[name])
    assert ":" in image, f"{name}: {image} has no tag"
    tag = image.rsplit(":", 1)[1]
    assert tag != "latest", f"{name}: {image}"
    assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_every_database_user_waits_for_a_healthy_migrated_database() -> None:
    users = {
        n: s for n, s in services().items() if "CITYVITALS_DATABASE_URL" in s.get("environment", {})
    }
    assert set(users) == {"migrate", "collector-1", "collector-2", "api"}
    for name, service in users.items():
        deps = service["depends_on"]
        assert deps["timescaledb"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert services()["migrate"]["command"] == ["migrate"]
    assert "pg_isready" in services()["timescaledb"]["healthcheck"]["test"]


def test_broker_users_wait_for_a_healthy_broker() -> None:
    for name, service in services().items():
        if "CITYVITALS_MQTT_URL" in service.get("environment", {}):
            assert service["depends_on"]["mosquitto"]["condition"] == "service_healthy", name


def test_long_running_services_restart_and_migrate_runs_once() -> None:
    for name, service in services().items():
        expected = "no" if name == "migrate" else "unless-stopped"
        assert service.get("restart") == expected, name


def test_two_collectors_share_the_subscription_with_distinct_client_ids() -> None:
    collectors = [s for s in services().values() if s.get("command") == ["collector"]]
    ids = [s["environment"]["CITYVITALS_CLIENT_ID"] for s in collectors]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    for s in collectors:
        assert s["environment"]["CITYVITALS_METRICS_HOST"] == "0.0.0.0"  # noqa: S104


def test_api_listens_on_all_interfaces_and_simulator_is_demo_only() -> None:
    assert services()["api"]["environment"]["CITYVITALS_API_HOST"] == "0.0.0.0"  # noqa: S104
    assert services()["api"]["command"] == ["api"]
    assert services()["simulator"]["profiles"] == ["demo"]
    assert services()["simulator"]["command"] == ["simulate"]
    assert all("profiles" not in s for n, s in services().items() if n != "simulator")


def test_service_variables_are_settings_the_services_read() -> None:
    fields: set[str] = set()
    for obj in vars(settings_module).values():
        if isinstance(obj, type) and issubclass(obj, settings_module.CommonSettings):
            fields |= {f"CITYVITALS_{f.upper()}" for f in obj.model_fields}
    used = {
        key
        for service in services().values()
        for key in service.get("environment", {})
        if key.startswith("CITYVITALS_")
    }
    assert used - fields == set(), "variables no settings class reads"


def test_every_interpolated_variable_is_in_the_env_example() -> None:
    text = COMPOSE.read_text()
    # `$$` is a literal dollar for the container's shell.
    names = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert names - set(env_example()) == set(), "variables deploy/env.example does not list"


def test_env_example_holds_no_secret() -> None:
    for key, value in env_example().items():
        if re.search(r"PASSWORD|TOKEN|SECRET", key):
            assert value == "", f"{key} has a value in deploy/env.example"


def test_required_secrets_stop_compose_when_unset() -> None:
    text = COMPOSE.read_text()
    for key in ("POSTGRES_PASSWORD", "MQTT_COLLECTOR_PASSWORD", "CITYVITALS_ADMIN_TOKEN",
                "GRAFANA_ADMIN_PASSWORD", "MQTT_HEALTHCHECK_PASSWORD"):  # fmt: skip
        assert f"${{{key}:?" in text, f"{key} is not required"


def test_broker_mounts_the_shipped_config() -> None:
    mounts = services()["mosquitto"]["volumes"]
    for name in ("mosquitto.conf", "acl", "conf.d"):
        assert any(str(m).startswith(f"./deploy/mosquitto/{name}:") for m in mounts), name


# --- Dockerfile -------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
        for parts in [line.strip().split(None, 1)]
    ]


def _bootstrap_uv_version() -> str:
    m = re.search(r"uv==([\d.]+)", (ROOT / "scripts" / "bootstrap.sh").read_text())
    assert m, "scripts/bootstrap.sh pins no uv version"
    return m.group(1)


def test_dockerfile_uses_the_bootstrap_uv_and_a_pinned_slim_python() -> None:
    text = DOCKERFILE.read_text()
    assert f"ghcr.io/astral-sh/uv:{_bootstrap_uv_version()} " in text
    m = re.search(r"ARG PYTHON_IMAGE=python:(\S+)", text)
    assert m, "no pinned python base image"
    assert re.fullmatch(r"3\.11\.\d+-slim-\w+", m.group(1)), m.group(1)


def test_dockerfile_installs_from_the_lock_without_dev_dependencies() -> None:
    syncs = [arg for op, arg in _dockerfile_instructions() if op == "RUN" and "uv sync" in arg]
    assert syncs
    for arg in syncs:
        assert "--locked" in arg
        assert "--no-dev" in arg
    assert not any("pip install" in arg for op, arg in _dockerfile_instructions() if op == "RUN")


def test_image_runs_cityvitals_as_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    froms = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[froms[-1] :]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert ("ENTRYPOINT", '["cityvitals"]') in final


def test_dockerignore_keeps_secrets_and_tests_out_of_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src
        for op, arg in _dockerfile_instructions()
        if op == "COPY" and not arg.startswith("--from")
        for src in arg.split()[:-1]
    }
    assert copied <= allowed
    assert not allowed & {".env", "tests", ".venv", "deploy"}


def test_dockerfile_install_steps_give_a_working_cli_without_dev_tools(tmp_path: Path) -> None:
    """Run the build stage's COPY and `uv sync` steps here, without Docker."""
    uv = ROOT / ".tools" / "bin" / "uv"
    if not uv.exists():
        pytest.fail("no .tools/bin/uv: run `make install` (scripts/bootstrap.sh) first")
    src, venv = tmp_path / "src", tmp_path / "venv"
    src.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"}
    ran = 0
    for op, arg in _dockerfile_instructions():
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _ = arg.split()
            for s in sources:
                (shutil.copytree if (ROOT / s).is_dir() else shutil.copy)(ROOT / s, src / s)
        elif op == "RUN" and "uv sync" in arg:
            words = [w for w in shlex.split(arg) if not w.startswith("--mount")]
            subprocess.run([str(uv), *words[1:]], cwd=src, env=env, check=True, timeout=300)
            ran += 1
        elif op == "FROM" and ran:
            break
    assert ran == 2
    assert (
        subprocess.run(
            [str(venv / "bin" / "cityvitals"), "--help"],
            capture_output=True,
            check=False,
            timeout=60,
        ).returncode
        == 0
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("pytest*")), "dev dependencies in the image"
    assert not list(site.glob("mypy*")), "dev dependencies in the image"
    assert (site / "cityvitals" / "db" / "migrations" / "env.py").exists()
