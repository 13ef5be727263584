"""Issue #13: deploy/compose.yaml and deploy/k8s start the reference topology, and stay valid.

The topology: tracking x2, registry x2, artifacts x1, inference x1, each its own
``keel server --services X`` process, on one database and one S3 store; every server knows where
the others run (``KEEL_<SERVICE>_ADDRESS``, handed to clients by discovery), so a client holds
one URI, the tracking service's.

* ``kubernetes-validate --strict`` (PyPI; its schemas ship in the wheel, so it runs offline) on
  every manifest but the Kustomization, which has no schema; and on ``kubectl kustomize``'s output
  where kubectl exists.
* A consistency check of both files parsed with PyYAML: replica counts, one service per
  container, addresses that name exactly the containers (or headless Services) running each
  service, variable names the server's ``Settings`` knows, the same names in compose and
  Kubernetes, shutdown and probe settings that agree with the server's.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel_server.common.config import ALL_SERVICES, Settings

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"

REPLICAS = {"tracking": 2, "registry": 2, "artifacts": 1, "inference": 1}
ADDRESS_VARS = {service: f"KEEL_{service.upper()}_ADDRESS" for service in ALL_SERVICES}
# Every KEEL_* variable the server reads: KEEL_<FIELD> of each Settings field (KEEL_SERVICES included).
SERVER_VARIABLES = {f"KEEL_{f.name.upper()}" for f in dataclasses.fields(Settings)}
# The process exits at most this long after KEEL_GRACE_SECONDS (services/common/server.py).
SHUTDOWN_BOUND_S = 2.0
# Kubernetes versions to validate against: an older one a cluster may still run, and the newest
# the pinned kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# ---------------------------------------------------------------- helpers
def _kubernetes_validate() -> Path:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    assert exe.exists(), f"{exe} is missing: pip install -r requirements.txt (it pins kubernetes-validate)"
    return exe


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in _manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text())


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _hosts(address: str) -> set[tuple[str, int]]:
    """``grpc://h1:p1,h2:p2`` → {(h1, p1), (h2, p2)}."""
    scheme, sep, rest = address.partition("://")
    assert sep and scheme in ("grpc", "grpcs"), f"{address!r} is not a grpc:// address"
    hosts = set()
    for part in rest.split(","):
        host, _, port = part.strip().rpartition(":")
        assert host and port.isdigit(), f"{address!r}: {part!r} is not host:port"
        hosts.add((host, int(port)))
    return hosts


def _seconds(value: str | int | float) -> float:
    """Compose durations ("20s", "1m30s") or plain numbers → seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"cannot read duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _env_list(env: Any) -> dict[str, str]:
    """A compose ``environment`` (mapping or list of NAME=value) as a dict of strings."""
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def _is_keel_image(image: str) -> bool:
    return image.rsplit("/", 1)[-1].split(":", 1)[0] == "keel"


# ---------------------------------------------------------------- compose side
def _compose_keel_servers() -> dict[str, dict[str, str]]:
    """{compose service name: its environment} of every `keel server` container."""
    services = _compose()["services"]
    return {
        name: env
        for name, spec in services.items()
        if "KEEL_SERVICES" in (env := _env_list(spec.get("environment")))
    }


def _compose_replicas(name: str) -> int:
    spec = _compose()["services"][name]
    return int((spec.get("deploy") or {}).get("replicas", 1))


# ---------------------------------------------------------------- kubernetes side
def _k8s_env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps/Secrets, then env (which wins)."""
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            obj = by_kind_name[("ConfigMap", source["configMapRef"]["name"])]
            env.update({k: str(v) for k, v in obj.get("data", {}).items()})
        if "secretRef" in source:
            obj = by_kind_name[("Secret", source["secretRef"]["name"])]
            env.update({k: str(v) for k, v in obj.get("stringData", {}).items()})
            assert not obj.get("data"), "keep the Secret's placeholders in stringData, readable"
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def _k8s_keel_deployments() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, str]]]:
    """(Deployment, its keel container, that container's environment) of every keel server."""
    objects = _k8s_objects()
    found = []
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        containers = [c for c in obj["spec"]["template"]["spec"]["containers"] if _is_keel_image(c["image"])]
        assert len(containers) == 1, f"{obj['metadata']['name']}: expected one keel container"
        found.append((obj, containers[0], _k8s_env(containers[0], objects)))
    return found


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"container {container['name']} has no port named {port!r}"
    return int(named[port])


# ================================================================ kubernetes-validate
@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_manifests_pass_kubernetes_validate_strict(k8s_version: str) -> None:
    files = _manifest_files()
    assert {p.name for p in files} >= {f"{s}.yaml" for s in ALL_SERVICES} | {"config.yaml"}
    result = subprocess.run(
        [str(_kubernetes_validate()), "--strict", "-k", k8s_version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every resource was checked against a schema (an unknown kind or apiVersion only warns).
    assert "WARN" not in output and "ERROR" not in output, output
    passed = output.count(" passed for resource ")
    assert passed == len(_k8s_objects()), output


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_passes_kubernetes_validate_strict(tmp_path: Path) -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    namespace = _kustomization()["namespace"]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace"), (
        "every object lands in the kustomization's namespace"
    )
    out = tmp_path / "built.yaml"
    out.write_text(built.stdout)
    result = subprocess.run(
        [str(_kubernetes_validate()), "--strict", "-k", K8S_VERSIONS[-1], str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "WARN" not in output, output


def test_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """--strict really is strict: a misspelt field fails (so the test above can fail too)."""
    text = (K8S / "tracking.yaml").read_text().replace("periodSeconds:", "periodSecond:", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = subprocess.run(
        [str(_kubernetes_validate()), "--strict", "-k", K8S_VERSIONS[-1], "--quiet", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


# ================================================================ consistency
def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    assert listed == {p.name for p in _manifest_files()}


def test_settings_variables_include_what_deploy_uses() -> None:
    """Sanity of the reference list itself (guards a rename in Settings)."""
    assert {"KEEL_SERVICES", "KEEL_DB_URL", "KEEL_METRICS_PORT", "KEEL_GRACE_SECONDS"} <= SERVER_VARIABLES
    assert set(ADDRESS_VARS.values()) <= SERVER_VARIABLES


def test_compose_starts_the_topology() -> None:
    servers = _compose_keel_servers()
    counts: Counter[str] = Counter()
    runs: dict[str, set[tuple[str, int]]] = {s: set() for s in ALL_SERVICES}
    for name, env in servers.items():
        services = [s.strip() for s in env["KEEL_SERVICES"].split(",") if s.strip()]
        assert len(services) == 1 and services[0] in ALL_SERVICES, (
            f"{name}: KEEL_SERVICES={env['KEEL_SERVICES']!r}"
        )
        counts[services[0]] += _compose_replicas(name)
        runs[services[0]].add((name, int(env["KEEL_PORT"])))
    assert dict(counts) == REPLICAS

    for name, env in servers.items():
        own = env["KEEL_SERVICES"].strip()
        for service in ALL_SERVICES:
            if service == own:
                continue
            assert ADDRESS_VARS[service] in env, f"{name} does not say where {service} runs"
            # The address names exactly the containers (compose DNS names) that run the service.
            assert _hosts(env[ADDRESS_VARS[service]]) == runs[service], (name, service)


def test_compose_uses_only_server_settings_and_one_database_and_store() -> None:
    services = _compose()["services"]
    keel_containers = {n: s for n, s in services.items() if _is_keel_image(s.get("image", ""))}
    assert "migrate" in keel_containers
    servers = _compose_keel_servers()
    for name, spec in keel_containers.items():
        env = _env_list(spec.get("environment"))
        if name not in servers:
            continue  # the migrate job (checked below) and the client
        unknown = {k for k in env if k.startswith("KEEL_")} - SERVER_VARIABLES
        assert not unknown, f"{name}: the server knows no {sorted(unknown)}"
        assert not {k for k in env if not k.startswith("KEEL_")}, f"{name}: non-keel variables"
        # The server accepts it as it starts (addresses are grpc://, the service is known, ...).
        settings = Settings.load(environ=env)
        assert settings.services == (env["KEEL_SERVICES"],)
    migrate = _env_list(services["migrate"]["environment"])
    assert {k for k in migrate if k.startswith("KEEL_")} <= SERVER_VARIABLES
    # One database and one store for everyone, the migrate job included.
    for key in ("KEEL_DB_URL", "KEEL_ARTIFACT_URI", "KEEL_S3_ENDPOINT_URL"):
        values = {_env_list(s["environment"]).get(key) for n, s in keel_containers.items() if n != "client"}
        assert len(values) == 1 and None not in values, (key, values)


def test_compose_shutdown_health_and_ports_agree_with_the_server() -> None:
    services = _compose()["services"]
    for name, env in _compose_keel_servers().items():
        spec = services[name]
        grace = float(env.get("KEEL_GRACE_SECONDS", Settings.grace_seconds))
        # compose SIGKILLs after stop_grace_period (default 10 s); keel needs grace + 2 s.
        assert _seconds(spec.get("stop_grace_period", "10s")) > grace + SHUTDOWN_BOUND_S, name
        assert "healthcheck" in spec and f"127.0.0.1:{env['KEEL_PORT']}" in " ".join(
            spec["healthcheck"]["test"]
        )
        assert int(env.get("KEEL_METRICS_PORT", "0")) > 0, f"{name}: no Prometheus metrics port"
        targets = {int(str(p).rsplit(":", 1)[-1]) for p in spec.get("ports", [])}
        assert int(env["KEEL_PORT"]) in targets, f"{name}: gRPC port not published"
        if "KEEL_HTTP_PORT" in env:
            assert int(env["KEEL_HTTP_PORT"]) in targets, f"{name}: HTTP scoring port not published"


def test_compose_client_holds_one_uri_the_tracking_address() -> None:
    services = _compose()["services"]
    client = _env_list(services["client"]["environment"])
    tracking_addresses = {env[ADDRESS_VARS["tracking"]] for env in _compose_keel_servers().values()}
    assert len(tracking_addresses) == 1
    assert client == {"KEEL_TRACKING_URI": tracking_addresses.pop()}
    # ... and the header comment shows that same URI.
    assert f"KEEL_TRACKING_URI={client['KEEL_TRACKING_URI']}" in COMPOSE.read_text()


def test_k8s_starts_the_topology() -> None:
    objects = _k8s_objects()
    namespace = _kustomization()["namespace"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [namespace]
    deployments = _k8s_keel_deployments()
    counts: Counter[str] = Counter()
    pods_of: dict[str, dict[str, str]] = {}
    port_of: dict[str, int] = {}
    for deployment, container, env in deployments:
        name = deployment["metadata"]["name"]
        services = [s.strip() for s in env["KEEL_SERVICES"].split(",") if s.strip()]
        assert len(services) == 1 and services[0] in ALL_SERVICES, (
            f"{name}: KEEL_SERVICES={env['KEEL_SERVICES']!r}"
        )
        service = services[0]
        assert service not in pods_of, f"two Deployments run {service}"
        counts[service] += int(deployment["spec"].get("replicas", 1))
        pods_of[service] = deployment["spec"]["template"]["metadata"]["labels"]
        port_of[service] = int(env["KEEL_PORT"])
        assert _container_port(container, "grpc") == port_of[service]
    assert dict(counts) == REPLICAS

    # Each service has a headless Service over its pods, on its gRPC port.
    headless: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] != "Service" or obj["spec"].get("clusterIP") != "None":
            continue
        selector = obj["spec"]["selector"]
        for service, labels in pods_of.items():
            if selector.items() <= labels.items():
                ports = {int(p["port"]) for p in obj["spec"]["ports"]}
                assert port_of[service] in ports, obj["metadata"]["name"]
                headless[service] = obj["metadata"]["name"]
    assert set(headless) == set(ALL_SERVICES), f"headless Services: {headless}"

    for deployment, _container, env in deployments:
        own = env["KEEL_SERVICES"].strip()
        for service in ALL_SERVICES:
            if service == own:
                continue
            var = ADDRESS_VARS[service]
            assert var in env, f"{deployment['metadata']['name']} does not say where {service} runs"
            expected = {(f"{headless[service]}.{namespace}.svc.cluster.local", port_of[service])}
            assert _hosts(env[var]) == expected, (deployment["metadata"]["name"], var, env[var])


def test_k8s_uses_only_server_settings() -> None:
    objects = _k8s_objects()
    containers = []
    for obj in objects:
        template = (obj.get("spec") or {}).get("template")
        if template:
            containers += [c for c in template["spec"]["containers"] if _is_keel_image(c["image"])]
    assert len(containers) == len(ALL_SERVICES) + 1  # four servers and the migrate Job
    for container in containers:
        env = _k8s_env(container, objects)
        unknown = set(env) - SERVER_VARIABLES
        assert not unknown, f"{container['name']}: the server knows no {sorted(unknown)}"
        Settings.load(environ=env)  # the server accepts it as it starts


def test_k8s_shutdown_probes_and_metrics_agree_with_the_server() -> None:
    for deployment, container, env in _k8s_keel_deployments():
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        grace = float(env.get("KEEL_GRACE_SECONDS", Settings.grace_seconds))
        pre_stop = 0.0
        command = (((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
        if command:
            assert command[0] == "sleep", f"{name}: preStop is expected to be a sleep"
            pre_stop = float(command[1])
        termination = pod["spec"].get("terminationGracePeriodSeconds", 30)
        assert termination > pre_stop + grace + SHUTDOWN_BOUND_S, name

        grpc_port = int(env["KEEL_PORT"])
        for probe in ("readinessProbe", "livenessProbe"):
            assert _container_port(container, container[probe]["grpc"]["port"]) == grpc_port, (name, probe)

        metrics = int(env.get("KEEL_METRICS_PORT", "0"))
        assert metrics > 0, f"{name}: no Prometheus metrics port"
        assert _container_port(container, "metrics") == metrics
        annotations = pod["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true"
        assert int(annotations.get("prometheus.io/port", 0)) == metrics
        if "KEEL_HTTP_PORT" in env:
            assert _container_port(container, "http") == int(env["KEEL_HTTP_PORT"])


def test_k8s_one_database_and_one_store_match_the_bundled_backends() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _k8s_objects()}
    namespace = _kustomization()["namespace"]
    config = objects[("ConfigMap", "keel-config")]["data"]
    secrets = objects[("Secret", "keel-secrets")]["stringData"]
    backends = objects[("Secret", "keel-backends")]["stringData"]
    db = secrets["KEEL_DB_URL"]
    assert db == (
        f"postgresql://{backends['POSTGRES_USER']}:{backends['POSTGRES_PASSWORD']}"
        f"@postgres.{namespace}.svc.cluster.local:5432/{backends['POSTGRES_DB']}"
    )
    assert ("Service", "postgres") in objects and ("StatefulSet", "postgres") in objects
    assert config["KEEL_S3_ENDPOINT_URL"] == f"http://minio.{namespace}.svc.cluster.local:9000"
    assert (secrets["KEEL_S3_ACCESS_KEY"], secrets["KEEL_S3_SECRET_KEY"]) == (
        backends["MINIO_ROOT_USER"],
        backends["MINIO_ROOT_PASSWORD"],
    )
    bucket = config["KEEL_ARTIFACT_URI"].removeprefix("s3://").split("/", 1)[0]
    job = objects[("Job", "keel-minio-bucket")]
    assert f"local/{bucket}" in " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
    # The one client URI shown in config.yaml is the tracking address.
    assert f"KEEL_TRACKING_URI={config['KEEL_TRACKING_ADDRESS']}" in (K8S / "config.yaml").read_text()


def test_compose_and_k8s_use_the_same_variable_names() -> None:
    k8s = {env["KEEL_SERVICES"]: set(env) for _d, _c, env in _k8s_keel_deployments()}
    for name, env in _compose_keel_servers().items():
        assert set(env) == k8s.get(env["KEEL_SERVICES"]), name


def test_docs_describe_every_server_setting() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    missing = sorted(v for v in SERVER_VARIABLES if f"`{v}`" not in docs)
    assert not missing, f"docs/deploy.md (Settings) does not describe {missing}"
