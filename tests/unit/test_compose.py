"""compose/docker-compose.yml: valid per the Compose Specification, and shaped as we rely on.

There is no Docker engine (nor internet) on the project's machines, so the file is validated against
the vendored schema always, and with `docker-compose config` when that binary is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA_FILE = COMPOSE_DIR / "compose-spec.schema.json"

CROSSREC_COMMANDS = {
    "ingest": ["crossrec", "ingest"],
    "gateway": ["crossrec", "gateway"],
    "trainer": ["crossrec", "trainer"],
    "query": ["crossrec", "query-service"],
    "router": ["crossrec", "router"],
    "shard-controller": ["crossrec", "shard-controller"],
}
SETTINGS = {
    "CROSSREC_KAFKA_BOOTSTRAP": "kafka:9092",
    "REDIS_URL": "redis://redis:6379/0",
    "CROSSREC_EVENTLOG_URL": "file:///data/eventlog",
    "CROSSREC_MODELSTORE_URL": "file:///data/models",
    "CROSSREC_ES_URL": "http://elasticsearch:9200",
    "CROSSREC_RPC_REQUEST_TOPIC_SECONDS": "0",
}
TOPIC_PARTITIONS = {
    "crossrec.events": 8,
    "crossrec.dead-letter": 1,
    "crossrec.item-changes": 1,
    "crossrec.model-updates": 1,
    "crossrec.rpc-requests": 8,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema says draft-07 by a URI (no trailing '#') that validator_for does not recognise.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the spec allows KEY=VALUE lists too
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_schema_is_the_compose_spec(validator: jsonschema.protocols.Validator) -> None:
    assert validator.schema["title"] == "Compose Specification"


def test_compose_file_is_valid(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_validator_catches_mistakes(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    # Guards against a vacuous schema: a misspelt key and a wrong value must both be errors.
    bad = json.loads(json.dumps(compose))
    bad["services"]["ingest"]["comand"] = ["crossrec", "ingest"]
    bad["services"]["query"]["depends_on"]["topics"]["condition"] = "service_done"
    paths = {e.json_path for e in validator.iter_errors(bad)}
    assert "$.services.ingest" in paths
    assert "$.services.query.depends_on" in paths


def test_crossrec_services_share_one_image_and_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(CROSSREC_COMMANDS) <= set(services)
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in CROSSREC_COMMANDS}
    images = {services[name]["image"] for name in CROSSREC_COMMANDS}
    assert len(builds) == 1 and len(images) == 1
    build = services["ingest"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile.read_text(), re.M)
    for name, command in CROSSREC_COMMANDS.items():
        assert services[name]["command"] == command, name
        assert _env(services[name]) == SETTINGS, name


def test_every_service_can_scale(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "container_name" not in service, name
    for name in CROSSREC_COMMANDS:
        for port in compose["services"][name].get("ports", []):
            # A single fixed host port would make the second replica fail to start.
            published = str(port).rsplit(":", 1)[0] if ":" in str(port) else ""
            assert published == "" or "-" in published, (name, port)
    assert "7070-7079:7070" in compose["services"]["gateway"]["ports"]


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in CROSSREC_COMMANDS:
        deps = services[name]["depends_on"]
        assert deps["topics"] == {"condition": "service_completed_successfully"}, name
        for dep, spec in deps.items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("kafka", "redis", "elasticsearch", "gateway"):
        assert "healthcheck" in services[name], name


def test_kafka_runs_kraft_without_auto_topic_creation(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["CLUSTER_ID"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not any("ZOOKEEPER" in key for key in env)
    assert "zookeeper" not in compose["services"]


def test_topics_init_creates_each_topic(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["restart"] == "no"
    script = topics["command"][-1]
    created = {name: int(n) for name, n in re.findall(r"^create (\S+) (\d+)", script, re.M)}
    assert created == TOPIC_PARTITIONS
    # The names are the contract's, with the services' default prefix (CROSSREC_TOPIC_PREFIX is
    # not set in compose). Partition counts differ on purpose: production has more than the
    # embedded stack.
    contract = json.loads((REPO / "schemas" / "topics.json").read_text())
    assert set(created) == {f"crossrec.{topic['name']}" for topic in contract["topics"]}
    # `$$` is compose's escape for a literal `$`: an unescaped `$1` would be interpolated away.
    assert '"$$1"' in script and '"$$2"' in script


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=COMPOSE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
