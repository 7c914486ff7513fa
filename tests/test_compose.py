"""compose.yaml, the Dockerfile and deploy/: checked without Docker and without the network.

The Compose Specification schema is vendored at tests/schemas/compose-spec.json, copied unchanged
from github.com/compose-spec/compose-spec, file schema/compose-spec.json at commit
00655e2222608fa6eaecdf12ac5195889ca2244a (JSON Schema draft-07). To update it, replace the file
with a newer copy of that same path and change the commit here.

Every rule below is a function returning the problems it finds, so that the tests can prove each
rule fails on a deliberately broken copy of the real file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped, unused-ignore]

from maillage.common import sealing

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = ROOT / "tests" / "schemas" / "compose-spec.json"
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector.yaml"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init" / "01-databases.sql"

MAILLAGE_SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
HOST_PORTS = {
    "registry": 8001,
    "cordees": 8002,
    "stages3e": 8003,
    "funding": 8004,
    "notifications": 8005,
}
INFRASTRUCTURE = (
    "kafka",
    "postgres",
    "otel-collector",
    "jaeger",
    "mailpit",
    "prometheus",
    "grafana",
)
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"

Compose = dict[str, Any]


# ---- loading ------------------------------------------------------------------------------------


def load_compose() -> Compose:
    """compose.yaml with its anchors and merge keys resolved, as plain JSON data.

    The JSON round trip unshares what YAML aliases share, so a test can break one service's
    copy without breaking the others.
    """
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    plain: Compose = json.loads(json.dumps(document))
    return plain


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture
def compose() -> Compose:
    return load_compose()


# ---- rules --------------------------------------------------------------------------------------


def schema_errors(validator: Draft7Validator, document: Compose) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def missing_healthchecks(document: Compose) -> list[str]:
    problems = []
    for name, service in document["services"].items():
        check = service.get("healthcheck")
        if not isinstance(check, dict) or not check.get("test"):
            problems.append(f"{name}: no healthcheck")
        elif check.get("disable") or check["test"] == ["NONE"]:
            problems.append(f"{name}: healthcheck disabled")
    return problems


def missing_services(document: Compose) -> list[str]:
    present = set(document["services"])
    return [name for name in (*MAILLAGE_SERVICES, *INFRASTRUCTURE) if name not in present]


def dependency_problems(document: Compose) -> list[str]:
    """Each service waits for a healthy kafka and postgres, the others for a healthy registry."""
    problems = []
    for name in MAILLAGE_SERVICES:
        depends_on = document["services"][name].get("depends_on", {})
        if not isinstance(depends_on, dict):
            problems.append(f"{name}: depends_on must be a mapping with conditions")
            continue
        required = ["kafka", "postgres"] + ([] if name == "registry" else ["registry"])
        for dependency in required:
            condition = depends_on.get(dependency, {}).get("condition")
            if condition != "service_healthy":
                problems.append(f"{name} -> {dependency}: condition is {condition!r}")
    return problems


def build_problems(document: Compose) -> list[str]:
    problems = []
    for name in MAILLAGE_SERVICES:
        build = document["services"][name].get("build")
        if not isinstance(build, dict):
            problems.append(f"{name}: build must be a mapping")
            continue
        if build.get("context") != ".":
            problems.append(f"{name}: build context {build.get('context')!r} is not the root")
        if build.get("dockerfile", "Dockerfile") != "Dockerfile":
            problems.append(f"{name}: not built from the root Dockerfile")
        arg = (build.get("args") or {}).get("SERVICE")
        if arg != name:
            problems.append(f"{name}: build arg SERVICE is {arg!r}")
    return problems


def privileged_services(document: Compose) -> list[str]:
    return [
        name
        for name, service in document["services"].items()
        if service.get("privileged") not in (None, False, "false")
        or "SYS_ADMIN" in service.get("cap_add", [])
        or service.get("network_mode") == "host"
    ]


def environment_problems(document: Compose) -> list[str]:
    """The per-service settings: <NAME>_ prefix, own database, shared broker and issuer."""
    problems = []
    for name in MAILLAGE_SERVICES:
        env = document["services"][name].get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        prefix = f"{name.upper()}_"
        expected = {
            "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
            "JWKS_URL": "http://registry:8000/.well-known/jwks.json",
            "JWT_ISSUER": "http://registry:8000",
            "JWT_AUDIENCE": "maillage",
            "LOG_FORMAT": "json",
            "ENVIRONMENT": "production",
        }
        for key, value in expected.items():
            if env.get(prefix + key) != value:
                problems.append(f"{name}: {prefix}{key} = {env.get(prefix + key)!r}")
        url = str(env.get(prefix + "DATABASE_URL", ""))
        if not re.fullmatch(rf"postgresql://[^@/]+@postgres:5432/{name}", url):
            problems.append(f"{name}: {prefix}DATABASE_URL = {url!r}")
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://otel-collector:4318":
            problems.append(f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT missing")
        foreign = [
            key for key in env if key.endswith("_DATABASE_URL") and key != f"{prefix}DATABASE_URL"
        ]
        if foreign:
            problems.append(f"{name}: configured with another service's database {foreign}")
    return problems


def port_problems(document: Compose) -> list[str]:
    problems = []
    for name, host_port in HOST_PORTS.items():
        ports = [str(port) for port in document["services"][name].get("ports", [])]
        if ports != [f"{host_port}:8000"]:
            problems.append(f"{name}: ports {ports}, expected {host_port}:8000")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """Multi-stage, the final stage runs as a non-root user and has a HEALTHCHECK."""
    problems = []
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    if len(stages) < 2:
        problems.append(f"not multi-stage: {len(stages)} FROM")
        return problems
    final = stages[-1]
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    if not users:
        problems.append("the final stage has no USER")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as {users[-1]}")
    if not any(line.upper().startswith("HEALTHCHECK ") for line in final):
        problems.append("the final stage has no HEALTHCHECK")
    if not any(line.upper().startswith("EXPOSE ") and "8000" in line for line in final):
        problems.append("the final stage does not EXPOSE 8000")
    if not any(line.upper().startswith("ARG SERVICE") for line in text.splitlines()):
        problems.append("no ARG SERVICE")
    copies = [line for line in final if line.upper().startswith(("COPY ", "ADD "))]
    if any("--from=" not in line for line in copies):
        problems.append(f"the final stage copies from the build context: {copies}")
    return problems


# ---- the real files -----------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(
    validator: Draft7Validator, compose: Compose
) -> None:
    assert schema_errors(validator, compose) == []


def test_compose_file_has_no_obsolete_version_key(compose: Compose) -> None:
    assert "version" not in compose


def test_every_service_has_a_healthcheck(compose: Compose) -> None:
    assert missing_healthchecks(compose) == []


def test_the_stack_has_the_five_services_and_the_infrastructure(compose: Compose) -> None:
    assert missing_services(compose) == []


def test_services_wait_for_a_healthy_broker_database_and_registry(compose: Compose) -> None:
    assert dependency_problems(compose) == []


def test_each_service_is_built_from_the_dockerfile_with_its_own_name(compose: Compose) -> None:
    assert build_problems(compose) == []


def test_no_service_is_privileged(compose: Compose) -> None:
    assert privileged_services(compose) == []


def test_services_are_configured_by_their_own_prefixed_variables(compose: Compose) -> None:
    assert environment_problems(compose) == []


def test_services_are_published_on_their_host_ports(compose: Compose) -> None:
    assert port_problems(compose) == []


def test_service_healthchecks_probe_readiness(compose: Compose) -> None:
    for name in MAILLAGE_SERVICES:
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert "/readyz" in test, name


def test_every_service_restarts(compose: Compose) -> None:
    assert {name for name, s in compose["services"].items() if not s.get("restart")} == set()


def test_kafka_runs_in_kraft_mode_as_a_single_node(compose: Compose) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert not any("zookeeper" in name for name in compose["services"])
    assert "kafka-broker-api-versions.sh" in " ".join(
        compose["services"]["kafka"]["healthcheck"]["test"]
    )


def test_postgres_creates_one_database_per_service(compose: Compose) -> None:
    created = re.findall(r"CREATE DATABASE (\w+)", POSTGRES_INIT.read_text(encoding="utf-8"))
    assert sorted(created) == sorted(MAILLAGE_SERVICES)
    mounts = compose["services"]["postgres"]["volumes"]
    assert "./deploy/postgres/init:/docker-entrypoint-initdb.d:ro" in mounts
    assert "pg_isready" in compose["services"]["postgres"]["healthcheck"]["test"]


def test_notifications_send_mail_to_mailpit(compose: Compose) -> None:
    env = compose["services"]["notifications"]["environment"]
    assert env["NOTIFICATIONS_SMTP_HOST"] == "mailpit"
    assert int(env["NOTIFICATIONS_SMTP_PORT"]) == 1025
    assert (
        compose["services"]["notifications"]["depends_on"]["mailpit"]["condition"]
        == "service_healthy"
    )


def test_bind_mounts_point_at_files_in_the_repository(compose: Compose) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_collector_receives_otlp_and_exports_traces_to_jaeger(compose: Compose) -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text(encoding="utf-8"))
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "debug" in config["exporters"]
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
    service = config["service"]
    assert "health_check" in service["extensions"]
    traces = service["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert "otlp/jaeger" in traces["exporters"]
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config.get(kind, {})), pipeline
    collector = compose["services"]["otel-collector"]
    assert "13133" in " ".join(collector["healthcheck"]["test"])
    assert (
        "./deploy/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro" in collector["volumes"]
    )


def test_prometheus_scrapes_the_collectors_exporter_and_loads_the_rules(compose: Compose) -> None:
    collector = yaml.safe_load(COLLECTOR_CONFIG.read_text(encoding="utf-8"))
    assert "prometheus" in collector["service"]["pipelines"]["metrics"]["exporters"]
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"otel-collector:{exporter_port}" in targets
    prometheus = compose["services"]["prometheus"]
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    for rule_file in config["rule_files"]:
        assert rule_file in mounted, f"{rule_file} is not mounted"
        assert (ROOT / mounted[rule_file]).is_file()
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])
    assert prometheus["depends_on"]["otel-collector"]["condition"] == "service_healthy"


def test_grafana_is_provisioned_from_the_repository(compose: Compose) -> None:
    grafana = compose["services"]["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "maillage.yaml").read_text(encoding="utf-8")
    )["providers"]
    paths = {provider["options"]["path"] for provider in providers}
    assert f"./deploy/grafana/dashboards:{paths.pop()}:ro" in grafana["volumes"]
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text(encoding="utf-8")
    )["datasources"]
    urls = {source["type"]: source["url"] for source in sources}
    assert urls["prometheus"] == "http://prometheus:9090"
    assert urls["jaeger"] == "http://jaeger:16686"
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    assert {"prometheus", "jaeger"} <= set(grafana["depends_on"])
    # The admin password comes from the environment (a default only for a local stack).
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


# ---- the rules catch broken copies --------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    def mutate(document: Compose) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[Compose], None]:
    def mutate(document: Compose) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_set("services.registry.privileged_mode", True), id="unknown-service-key"),
        pytest.param(
            _set("services.cordees.depends_on.kafka.condition", "service_ready"), id="bad-condition"
        ),
        pytest.param(_set("services.kafka.healthcheck.retries", [3]), id="healthcheck-type"),
        pytest.param(_set("services.funding.ports", "8004:8000"), id="ports-not-a-list"),
        pytest.param(_set("services.registry.build.args", "SERVICE=registry"), id="args-type"),
        pytest.param(_set("networks", ["default"]), id="networks-not-a-mapping"),
        pytest.param(_set("services.jaeger.healthcheck.interval", 10), id="interval-not-a-string"),
        pytest.param(_set("servces", {}), id="unknown-top-level-key"),
    ],
)
def test_schema_rejects_a_broken_copy(
    validator: Draft7Validator, compose: Compose, mutate: Callable[[Compose], None]
) -> None:
    mutate(compose)
    assert schema_errors(validator, compose) != []


@pytest.mark.parametrize(
    ("rule", "mutate"),
    [
        pytest.param(
            missing_healthchecks, _delete("services.mailpit.healthcheck"), id="healthcheck"
        ),
        pytest.param(
            missing_healthchecks, _set("services.jaeger.healthcheck.disable", True), id="disabled"
        ),
        pytest.param(missing_services, _delete("services.stages3e"), id="service"),
        pytest.param(dependency_problems, _delete("services.funding.depends_on.kafka"), id="dep"),
        pytest.param(
            dependency_problems,
            _set("services.cordees.depends_on.registry.condition", "service_started"),
            id="dep-condition",
        ),
        pytest.param(
            build_problems, _set("services.funding.build.args.SERVICE", "registry"), id="arg"
        ),
        pytest.param(privileged_services, _set("services.postgres.privileged", True), id="priv"),
        pytest.param(
            environment_problems,
            _set(
                "services.cordees.environment.CORDEES_DATABASE_URL",
                "postgresql://u:p@postgres:5432/registry",
            ),
            id="foreign-database",
        ),
        pytest.param(
            environment_problems, _delete("services.funding.environment.FUNDING_JWKS_URL"), id="env"
        ),
        pytest.param(port_problems, _set("services.registry.ports", ["8000:8000"]), id="port"),
    ],
)
def test_rule_catches_a_broken_copy(
    compose: Compose, rule: Callable[[Compose], list[str]], mutate: Callable[[Compose], None]
) -> None:
    assert rule(compose) == []
    mutate(compose)
    assert rule(compose) != []


def _final_stage_only(text: str) -> str:
    return text[text.rindex("\nFROM ") + 1 :]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t.replace("USER 10001:10001", "USER root"), id="root-user"),
        pytest.param(lambda t: t.replace("USER 10001:10001", "USER 0:0"), id="uid-0"),
        pytest.param(lambda t: t.replace("USER 10001:10001", ""), id="no-user"),
        pytest.param(_final_stage_only, id="single-stage"),
        pytest.param(
            lambda t: t.replace("COPY --from=builder /opt/venv /opt/venv", "COPY . /opt/app"),
            id="copies-sources",
        ),
        pytest.param(lambda t: re.sub(r"(?m)^HEALTHCHECK.*\n.*\n", "", t), id="no-healthcheck"),
    ],
)
def test_dockerfile_rule_catches_a_broken_copy(mutate: Callable[[str], str]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_problems(text) == []
    broken = mutate(text)
    assert broken != text
    assert dockerfile_problems(broken) != []


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::(?P<op>[-?])(?P<word>[^}]*))?\}")


# The claim-seal pair must be a real X25519 key in PEM, as the README makes it with openssl.
_CLAIM_SEAL_KEY = sealing.generate_private_pem()
CHOSEN = {
    "NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY": _CLAIM_SEAL_KEY,
    "REGISTRY_CLAIM_SEAL_PUBLIC_KEY": sealing.public_pem(_CLAIM_SEAL_KEY),
}


def interpolated(value: object) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, as an operator who sets nothing but the
    required variables would get them (required ones stand for a value they chose)."""
    return _VARIABLE.sub(
        lambda match: (
            match["word"]
            if match["op"] == "-"
            else CHOSEN.get(match["name"], f"chosen-{match['name'].lower()}")
        ),
        str(value),
    )


@pytest.mark.parametrize("service", ["registry", "cordees", "stages3e", "funding", "notifications"])
def test_each_service_accepts_the_environment_compose_gives_it(
    compose: Compose, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings class of the service validates what compose sets (production included), so
    `docker compose up` cannot fail on configuration the tests never saw."""
    import importlib

    for name in list(os.environ):
        if name.startswith(f"{service.upper()}_"):
            monkeypatch.delenv(name)
    environment = compose["services"][service]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, interpolated(value))
    app = importlib.import_module(f"maillage.{service}.app")
    settings_class = next(
        value
        for name, value in vars(app).items()
        if name.endswith("Settings") and name != "ServiceSettings" and isinstance(value, type)
    )
    settings = settings_class()
    assert settings.environment == "production"
    assert settings.service_name == service
    assert settings.database_url.get_secret_value().endswith(f"/{service}")
