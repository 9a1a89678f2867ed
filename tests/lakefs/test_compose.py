"""docker-compose.yaml, checked without a Docker engine: parsed (with the variables of the DEV ONLY
``.env`` that Compose reads by itself), every service the docs name is there, long-running services
are health-checked, and each is wired to the others' real addresses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from airflow_repro.config import ReproSettings

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
LONG_RUNNING = (*AIRFLOW_SERVICES, "postgres", "lakefs", "mlflow", "marquez", "marquez-db", "marquez-web")


COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text()
#: ``${NAME}``, ``${NAME:?message}``, ``${NAME?message}``, ``${NAME:-default}``, ``${NAME-default}`` (Compose's forms).
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}")


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as Compose reads them (comments and blank lines skipped, quotes removed)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("\"'")
    return values


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution; a required variable that is unset fails as ``compose up`` would."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = variables.get(name)
        if op.endswith("?") and not value:
            raise AssertionError(f"docker compose would refuse to start: {name} is unset ({arg})")
        return value if value else (arg if op.endswith("-") else "")

    return VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    return read_dotenv(ROOT / ".env")


@pytest.fixture(scope="module")
def compose(dotenv: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE_TEXT, dotenv))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def container_port(service: dict[str, Any], option: str) -> int:
    """The port a server listens on, from its command line (``--port=N`` / ``--port N``)."""
    command = service["command"]
    text = command if isinstance(command, str) else " ".join(command)
    match = re.search(rf"{option}[= ](\d+)", text)
    assert match, f"{option} not found in {text!r}"
    return int(match.group(1))


def test_every_service_the_docs_name_is_defined(services: dict[str, Any]) -> None:
    docs = (ROOT / "docs" / "docker-compose.md").read_text()
    named = set(re.findall(r"`([a-z][a-z-]+)`", docs)) & (set(services) | set(LONG_RUNNING) | {"airflow-init"})
    assert named >= {*LONG_RUNNING, "airflow-init"}, "docs/docker-compose.md must name every service"
    assert named <= set(services), f"documented but missing: {named - set(services)}"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_are_health_checked(services: dict[str, Any], name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and check.get("retries", 0) > 0


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_waits_for_its_dependencies(services: dict[str, Any], name: str) -> None:
    depends = services[name]["depends_on"]
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    for dependency in ("postgres", "lakefs", "mlflow", "marquez"):
        assert depends[dependency]["condition"] == "service_healthy", dependency
    for dependency, rule in depends.items():
        assert dependency in services and rule["condition"].startswith("service_")


def test_the_package_is_installed_from_the_lockfile_and_dags_are_mounted(services: dict[str, Any]) -> None:
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        service = services[name]
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert "uv sync --frozen" in dockerfile.read_text()
        assert "./dags:/opt/airflow/dags" in service["volumes"]
        assert "./plugins:/opt/airflow/plugins" in service["volumes"]
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])


def test_airflow_points_at_the_other_services(services: dict[str, Any]) -> None:
    env = env_of(services["airflow-scheduler"])
    database = urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    postgres = env_of(services["postgres"])
    assert (database.hostname, database.port, database.path) == ("postgres", 5432, f"/{postgres['POSTGRES_DB']}")
    assert (database.username, database.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])

    assert urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).netloc == (
        f"airflow-apiserver:{container_port(services['airflow-apiserver'], '--port')}"
    )

    lakefs = json.loads(env["AIRFLOW_CONN_LAKEFS_DEFAULT"])
    lakefs_env = env_of(services["lakefs"])
    assert lakefs["conn_type"] == "lakefs"
    assert urlparse(lakefs["host"]).netloc == f"lakefs:{lakefs_env['LAKEFS_LISTEN_ADDRESS'].rsplit(':', 1)[1]}"
    assert (lakefs["login"], lakefs["password"]) == (
        lakefs_env["LAKEFS_INSTALLATION_ACCESS_KEY_ID"],
        lakefs_env["LAKEFS_INSTALLATION_SECRET_ACCESS_KEY"],
    )
    assert lakefs_env["LAKEFS_BLOCKSTORE_TYPE"] == "local"

    mlflow = json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert (mlflow["host"], mlflow["port"]) == ("mlflow", container_port(services["mlflow"], "--port"))

    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "http"
    assert urlparse(transport["url"]).netloc == f"marquez:{env_of(services['marquez'])['MARQUEZ_PORT']}"


def test_the_repro_settings_of_the_stack_are_valid(services: dict[str, Any]) -> None:
    env = env_of(services["airflow-scheduler"])
    settings = ReproSettings.from_env(env)
    assert settings.store_kind == "lakefs" and settings.store_conn_id == "lakefs_default"
    assert f"AIRFLOW_CONN_{settings.store_conn_id.upper()}" in env
    assert f"AIRFLOW_CONN_{settings.mlflow_conn_id.upper()}" in env  # type: ignore[union-attr]
    assert settings.lakefs_storage_namespace.startswith("local://")


def test_marquez_and_its_ui_are_wired(services: dict[str, Any]) -> None:
    api, db = env_of(services["marquez"]), env_of(services["marquez-db"])
    assert api["POSTGRES_HOST"] == "marquez-db"
    assert (api["POSTGRES_USER"], api["POSTGRES_PASSWORD"], api["POSTGRES_DB"]) == (
        db["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
        db["POSTGRES_DB"],
    )
    web = env_of(services["marquez-web"])
    assert (web["MARQUEZ_HOST"], web["MARQUEZ_PORT"]) == ("marquez", api["MARQUEZ_PORT"])


def test_development_credentials_are_marked(compose: dict[str, Any]) -> None:
    assert "DEVELOPMENT CREDENTIALS" in COMPOSE_TEXT
    for line in [line for line in COMPOSE_TEXT.splitlines() if re.search(r"PASSWORD:|SECRET|FERNET_KEY", line)]:
        assert "DEV ONLY" in line or re.search(r":\s*\"?\$\{REPRO_LAKEFS_\w+:\?", line), line


def test_the_lakefs_key_pair_is_written_once_in_the_dev_only_env_file(
    dotenv: dict[str, str], services: dict[str, Any]
) -> None:
    """Compose reads ``.env`` by itself: lakeFS and Airflow's connection take the same pair from it."""
    key_id, secret = dotenv["REPRO_LAKEFS_ACCESS_KEY_ID"], dotenv["REPRO_LAKEFS_SECRET_ACCESS_KEY"]
    assert key_id and secret and key_id not in COMPOSE_TEXT and secret not in COMPOSE_TEXT
    assert "DEV ONLY" in (ROOT / ".env").read_text()
    used = {m["name"] for m in VARIABLE.finditer(COMPOSE_TEXT.replace("$$", ""))}  # $$ escapes a $
    assert used <= set(dotenv), f"variables docker-compose.yaml uses but .env does not set: {used - set(dotenv)}"
    lakefs_env = env_of(services["lakefs"])
    assert (lakefs_env["LAKEFS_INSTALLATION_ACCESS_KEY_ID"], lakefs_env["LAKEFS_INSTALLATION_SECRET_ACCESS_KEY"]) == (
        key_id,
        secret,
    )


def test_without_the_env_file_compose_refuses_to_start_and_says_why() -> None:
    with pytest.raises(AssertionError, match=r"REPRO_LAKEFS_ACCESS_KEY_ID is unset \(set it in \.env\)"):
        interpolate(COMPOSE_TEXT, {})
