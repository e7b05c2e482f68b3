"""Cluster deployment files: Kubernetes manifests, as `kubectl kustomize` renders them, against the Kubernetes
schemas, the cluster compose files against the same settings, and deploy/nginx.conf against the real nginx
(syntax, then retry behaviour with two fake replicas). No Docker, no cluster; a few seconds."""
from __future__ import annotations

import functools
import http.client
import http.server
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, poll

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest minor release the manifests must suit (managed clusters lag) and a recent one the package ships.
K8S_VERSIONS = ("1.29.0", "1.33.0")
# The image tag everywhere: the package's version, set once in deploy/k8s/base/kustomization.yaml's images:
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

_spec = importlib.util.spec_from_file_location("render_nginx_conf", DEPLOY / "render_nginx_conf.py")
render_nginx_conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_nginx_conf)


# --- Kubernetes -----------------------------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="no kubectl on PATH: deploy/k8s is rendered with `kubectl kustomize` (kustomize built in)")
# The base and every overlay: whatever `kubectl apply -k DIR` accepts must render and validate.
KUSTOMIZATIONS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def kustomize(directory: Path) -> list[dict]:
    """What `kubectl apply -k directory` would send; cached, so callers must not change the documents."""
    run = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)}: {run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


@pytest.fixture
def base() -> list[dict]:
    return kustomize(K8S)


@pytest.fixture
def gpu() -> list[dict]:
    return kustomize(K8S / "overlays" / "gpu")


def _by(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return doc


def _env(container: dict) -> dict:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def _validate(docs: list[dict], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {error}")


@needs_kubectl
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_kustomization_renders_to_manifests_valid_against_the_kubernetes_schemas(directory, version):
    docs = kustomize(directory)
    assert docs
    _validate(docs, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_file_validates_against_the_kubernetes_schemas(version):
    # a patch alone is not a whole object: its rendered result is what the test above checks
    patches = {k / p["path"] for k in KUSTOMIZATIONS
               for p in yaml.safe_load((k / "kustomization.yaml").read_text()).get("patches", []) if "path" in p}
    raw = [doc for path in sorted(K8S.rglob("*.yaml")) if path not in patches and path.name != "kustomization.yaml"
           for doc in _docs(path)]
    assert "Secret" in {doc["kind"] for doc in raw}  # secret.example.yaml, which no kustomization includes
    _validate(raw, version)


@needs_kubectl
def test_manifests_have_no_namespace_and_no_secret_values(base, gpu):
    assert {doc["kind"] for doc in base} == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                             "NetworkPolicy"}
    assert all("namespace" not in doc["metadata"] for doc in base + gpu)
    assert "Secret" not in {doc["kind"] for doc in base + gpu}  # created apart from the kustomization
    text = "\n".join(path.read_text() for path in (K8S / "base").glob("*.yaml"))
    assert "postgresql://" not in text and "password" not in text.lower()


@needs_kubectl
def test_the_api_deployment_serves_from_the_secret_and_trains_nothing(base):
    api = _by(base, "Deployment", "seq2seq-api")
    pod = api["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert api["spec"]["replicas"] == 3
    assert env["SEQ2SEQ_JOB_WORKERS"] == "0"
    assert env["SEQ2SEQ_DATABASE_URL"] == {"secretKeyRef": {"name": "seq2seq", "key": "database-url"}}
    assert env["SEQ2SEQ_API_KEY"] == {"secretKeyRef": {"name": "seq2seq", "key": "api-key"}}
    assert container["envFrom"] == [{"configMapRef": {"name": "seq2seq-config"}}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["terminationGracePeriodSeconds"] >= 15
    [migrate] = pod["initContainers"]
    assert migrate["command"] == ["python", "-m", "app", "migrate"]
    assert _env(migrate)["SEQ2SEQ_DATABASE_URL"] == env["SEQ2SEQ_DATABASE_URL"]
    assert container["image"] == migrate["image"] == f"seq2seq-serve:{VERSION}"
    # the Secret's keys are the ones the template documents; its key is a placeholder the service refuses
    example = _docs(K8S / "secret.example.yaml")[0]
    assert example["metadata"]["name"] == "seq2seq" and set(example["stringData"]) == {"database-url", "api-key"}
    assert example["stringData"]["api-key"] == "CHANGE-ME-to-the-output-of-openssl-rand-hex-32"
    assert len(example["stringData"]["api-key"]) >= 32
    # servers only check the schema; the initContainers migrate
    assert _by(base, "ConfigMap", "seq2seq-config")["data"]["SEQ2SEQ_MIGRATE"] == "check"


@needs_kubectl
@pytest.mark.parametrize("name", ["base", "gpu"])
def test_every_image_is_pinned_to_the_package_version_in_one_place(name, base, gpu):
    docs = {"base": base, "gpu": gpu}[name]
    images = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                assert container["imagePullPolicy"] == "IfNotPresent"
                images[(doc["metadata"]["name"], container["name"])] = container["image"]
    expected = {key: f"seq2seq-serve:{VERSION}" for key in images}
    if name == "gpu":
        expected[("seq2seq-worker", "worker")] = f"seq2seq-serve:{VERSION}-cuda"
    assert images == expected
    for path in K8S.rglob("*.yaml"):  # the tag is named only in the kustomizations' images:
        if path.name != "kustomization.yaml":
            assert ":latest" not in path.read_text() and VERSION not in path.read_text(), path


def _policy_allows_port(rules: list[dict], port: int, protocol: str = "TCP") -> bool:
    return any(p.get("port") == port and p.get("protocol", "TCP") == protocol for r in rules for p in r.get("ports", []))


def _selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@needs_kubectl
def test_network_policies_deny_by_default_and_allow_only_the_api_port_postgresql_and_dns(base):
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in base if doc["kind"] == "NetworkPolicy"}
    api_labels = _by(base, "Deployment", "seq2seq-api")["spec"]["template"]["metadata"]["labels"]
    worker_labels = _by(base, "Deployment", "seq2seq-worker")["spec"]["template"]["metadata"]["labels"]
    postgres_labels = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/part-of": "seq2seq"}
    # default deny: both directions, no rule, on every seq2seq pod
    deny = policies["seq2seq-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    assert _selects(deny["podSelector"], api_labels) and _selects(deny["podSelector"], worker_labels)

    def rules(labels: dict, kind: str) -> list[dict]:
        return [rule for spec in policies.values() if kind.capitalize() in spec["policyTypes"]
                and _selects(spec["podSelector"], labels) for rule in spec.get(kind, [])]

    # ingress: the API on its port only; the worker nothing; an app PostgreSQL only from the API and workers
    [api_in] = rules(api_labels, "ingress")
    assert [p["port"] for p in api_in["ports"]] == [8000] and "from" not in api_in
    assert rules(worker_labels, "ingress") == []
    [pg_in] = rules(postgres_labels, "ingress")
    assert [p["port"] for p in pg_in["ports"]] == [5432]
    [source] = pg_in["from"]
    assert set(source) == {"podSelector"}  # this namespace only
    assert _selects(source["podSelector"], api_labels) and _selects(source["podSelector"], worker_labels)
    assert not _selects(source["podSelector"], {**api_labels, "app.kubernetes.io/component": "other"})
    # egress: PostgreSQL's port and DNS, nothing else, for both
    for labels in (api_labels, worker_labels):
        out = rules(labels, "egress")
        ports = {(p["port"], p.get("protocol", "TCP")) for rule in out for p in rule["ports"]}
        assert ports == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}
        assert all(rule.get("ports") for rule in out)  # no rule open to every port
        dns = next(rule for rule in out if _policy_allows_port([rule], 53, "UDP"))
        assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                              "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    # the Service's target is the port the API policy opens
    [port] = _by(base, "Service", "seq2seq-api")["spec"]["ports"]
    [container_port] = _by(base, "Deployment", "seq2seq-api")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert container_port["name"] == port["targetPort"] and container_port["containerPort"] == 8000


@needs_kubectl
def test_the_service_and_the_disruption_budget_select_the_api_pods(base):
    api = _by(base, "Deployment", "seq2seq-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _by(base, "Service", "seq2seq-api")
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    [container_port] = api["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["port"] == 80 and port["targetPort"] == container_port["name"] and container_port["containerPort"] == 8000
    pdb = _by(base, "PodDisruptionBudget", "seq2seq-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 2
    worker_labels = _by(base, "Deployment", "seq2seq-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()  # the worker serves no HTTP


@needs_kubectl
def test_the_worker_runs_app_worker_and_the_gpu_overlay_gives_it_a_gpu(base, gpu):
    worker = _by(base, "Deployment", "seq2seq-worker")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "app.worker"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert _env(container)["SEQ2SEQ_DATABASE_URL"] == {"secretKeyRef": {"name": "seq2seq", "key": "database-url"}}
    assert "readinessProbe" not in container and "livenessProbe" not in container  # no HTTP to probe

    gpu_worker = _by(gpu, "Deployment", "seq2seq-worker")
    [container] = gpu_worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["memory"]  # the patch adds to the base's limits, not replaces
    assert _env(container)["SEQ2SEQ_DEVICE"] == "cuda" and container["image"] == f"seq2seq-serve:{VERSION}-cuda"
    assert container["command"] == ["python", "-m", "app.worker"]
    assert _by(gpu, "Deployment", "seq2seq-api") == _by(base, "Deployment", "seq2seq-api")


# --- Compose --------------------------------------------------------------------------------------------------

CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
CLUSTER_GPU = yaml.safe_load((ROOT / "docker-compose.cluster.gpu.yml").read_text())
SINGLE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
INTERPOLATION = re.compile(r"^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$")


def test_compose_builds_the_same_image_as_docker_compose_yml():
    services = CLUSTER["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker", "nginx"}
    for name in ("migrate", "api", "worker"):
        assert services[name]["build"] == SINGLE["services"]["api"]["build"]
        assert services[name]["image"] == SINGLE["services"]["api"]["image"] == f"seq2seq-serve:{VERSION}"


@pytest.mark.parametrize("name", ["postgres", "migrate", "api", "worker", "nginx"])
def test_compose_containers_are_hardened_and_bounded(name):
    service = CLUSTER["services"][name]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert float(service["cpus"]) > 0 and re.fullmatch(r"\d+[mg]", service["mem_limit"])
    assert service["pids_limit"] > 0
    # only what a stock image's entrypoint needs comes back, never a broad capability
    assert set(service.get("cap_add", [])) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE"}
    if name in ("migrate", "api", "worker"):
        assert "cap_add" not in service
        mounts = {entry.split(":")[0] for entry in service["tmpfs"]}
        assert mounts == {"/tmp", "/data"}  # the only places they write, the root filesystem being read-only


def test_compose_servers_and_workers_only_check_the_schema_and_migrate_runs_once():
    services = CLUSTER["services"]
    for name in ("api", "worker"):
        assert services[name]["environment"]["SEQ2SEQ_MIGRATE"] == "check"
    # `python -m app migrate` migrates whatever SEQ2SEQ_MIGRATE says
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]


def test_compose_postgres_is_healthchecked_on_a_volume_with_the_password_from_the_environment():
    postgres = CLUSTER["services"]["postgres"]
    assert re.fullmatch(r"postgres:1[56](\.\d+)?", postgres["image"])
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    [volume] = postgres["volumes"]
    assert volume.split(":")[0] in CLUSTER["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_compose_migrates_once_before_the_api_and_the_worker():
    services = CLUSTER["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["python", "-m", "app", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no" and migrate["healthcheck"] == {"disable": True}
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@needs_kubectl
def test_compose_api_matches_the_kubernetes_api(base):
    api = CLUSTER["services"]["api"]
    env = api["environment"]
    assert api["deploy"]["replicas"] == 3 == _by(base, "Deployment", "seq2seq-api")["spec"]["replicas"]
    assert env["SEQ2SEQ_JOB_WORKERS"] == "0"
    assert env["SEQ2SEQ_DATABASE_URL"].startswith("postgresql://seq2seq:${POSTGRES_PASSWORD")
    assert env["SEQ2SEQ_DATABASE_URL"].endswith("@postgres:5432/seq2seq")
    assert env["SEQ2SEQ_API_KEY"].startswith("${SEQ2SEQ_API_KEY:?")  # required: one key for every replica
    assert "ports" not in api  # nginx fronts the replicas
    assert api["restart"] == "unless-stopped"
    # the same readiness check as docker-compose.yml and the Kubernetes readinessProbe
    assert api["healthcheck"]["test"] == SINGLE["services"]["api"]["healthcheck"]["test"]
    assert any("/readyz" in part for part in api["healthcheck"]["test"])
    k8s_env = _env(_by(base, "Deployment", "seq2seq-api")["spec"]["template"]["spec"]["containers"][0])
    assert {"SEQ2SEQ_DATABASE_URL", "SEQ2SEQ_API_KEY", "SEQ2SEQ_JOB_WORKERS"} <= set(env) & set(k8s_env)
    assert env["SEQ2SEQ_JOB_WORKERS"] == k8s_env["SEQ2SEQ_JOB_WORKERS"]


@needs_kubectl
def test_compose_worker_matches_the_kubernetes_worker_and_its_gpu_override(base):
    worker = CLUSTER["services"]["worker"]
    k8s = _by(base, "Deployment", "seq2seq-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == k8s["command"] == ["python", "-m", "app.worker"]
    assert worker["environment"]["SEQ2SEQ_DATABASE_URL"] == CLUSTER["services"]["api"]["environment"]["SEQ2SEQ_DATABASE_URL"]
    assert INTERPOLATION.match(worker["environment"]["SEQ2SEQ_DEVICE"])  # configurable
    assert worker["healthcheck"] == {"disable": True} and "ports" not in worker
    assert worker["restart"] == "unless-stopped"
    gpu = CLUSTER_GPU["services"]["worker"]
    assert set(CLUSTER_GPU["services"]) == {"worker"}  # the api stays on CPU
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1
    assert gpu["environment"]["SEQ2SEQ_DEVICE"] == "cuda" and gpu["build"]["args"]["TORCH_INDEX"] == ""
    assert gpu["image"] == f"seq2seq-serve:{VERSION}-cuda"  # a CUDA build must not overwrite the api's CPU image


def test_compose_nginx_publishes_8000_with_the_mounted_config():
    nginx = CLUSTER["services"]["nginx"]
    assert re.fullmatch(r"nginx:1\.(2[2-9]|[3-9]\d)(\.\d+)?", nginx["image"])
    assert "8000:80" in nginx["ports"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"  # every replica resolvable at start


def test_compose_files_hold_no_literal_secrets():
    for compose in (CLUSTER, CLUSTER_GPU):
        for service in compose["services"].values():
            for name, value in (service.get("environment") or {}).items():
                if re.search(r"PASSWORD|API_KEY|SECRET|TOKEN", name):
                    assert INTERPOLATION.match(str(value)), f"{name} is a literal: {value}"
                if "://" in str(value):
                    assert re.search(r"://[^:/@]+:\$\{[A-Z_]+[^}]*\}@", value), f"{name}: literal password in URL"


# --- nginx ----------------------------------------------------------------------------------------------------

def _parse_nginx(text: str) -> list:
    """[(directive, [args], children or None)], enough of nginx's grammar for this file."""
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|#[^\n]*|[{};]|[^\s{};]+", text)
    stack, current, words = [], [], []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token == ";":
            current.append((words[0], words[1:], None))
            words = []
        elif token == "{":
            block = (words[0], words[1:], [])
            current.append(block)
            stack.append(current)
            current, words = block[2], []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            current = stack.pop()
        else:
            words.append(token)
    assert not stack and not words
    return current


def _find(block: list, name: str, *args: str) -> list:
    return [item for item in block if item[0] == name and tuple(item[1][:len(args)]) == args]


def _one(block: list, name: str, *args: str):
    [item] = _find(block, name, *args)
    return item


CONF = _parse_nginx((DEPLOY / "nginx.conf").read_text())
HTTP = _one(CONF, "http")[2]
SERVER = _one(HTTP, "server")[2]
INFERENCE_POSTS = ("/predict", "/predict/batch", "/topk/batch")
EVENTS = r"^/jobs/[^/]+/events$"


def _location(*args: str) -> list:
    return _one(SERVER, "location", *args)[2]


def _directive(block: list, name: str) -> list[str]:
    return _one(block, name)[1]


def test_nginx_upstream_has_passive_health_checks_and_keepalive():
    upstream = _one(HTTP, "upstream", "seq2seq_api")[2]
    servers = _find(upstream, "server")
    assert [args[0] for _, args, _ in servers] == ["api:8000"]
    assert {"max_fails=3", "fail_timeout=10s"} <= set(servers[0][1])
    assert _find(upstream, "keepalive")
    text = (DEPLOY / "nginx.conf").read_text()
    assert text.count("# upstream-servers-begin") == text.count("# upstream-servers-end") == 1


def test_nginx_server_level_headers_body_limit_and_keepalive():
    assert _directive(SERVER, "listen") == ["80"]
    # 1 MiB (the API's batch limit) everywhere, 10 MiB only where POST /jobs carries its dataset
    assert _directive(SERVER, "client_max_body_size") == ["1m"]
    sizes = {tuple(args): _directive(block, "client_max_body_size") for _, args, block in _find(SERVER, "location")
             if _find(block, "client_max_body_size")}
    assert sizes == {("/jobs",): ["10m"]}
    assert _directive(SERVER, "proxy_http_version") == ["1.1"]
    headers = {args[0]: args[1] for _, args, _ in _find(SERVER, "proxy_set_header")}
    assert headers["Connection"] == '""'
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Request-ID"] == "$seq2seq_request_id"
    request_id_map = dict((item[0], item[1][0]) for item in _one(HTTP, "map", "$http_x_request_id")[2])
    assert request_id_map == {"default": "$http_x_request_id", '""': "$request_id"}
    # a location with any proxy_set_header of its own would inherit none of the server's headers
    for _, args, block in _find(SERVER, "location"):
        assert not _find(block, "proxy_set_header"), f"location {args} drops the server's proxy headers"
        if _find(block, "proxy_pass"):
            assert _directive(block, "proxy_pass") == ["http://seq2seq_api"]
    # GETs elsewhere are retried on connection errors and timeouts only; POSTs that reached a replica never
    assert _directive(SERVER, "proxy_next_upstream") == ["error", "timeout"]


@pytest.mark.parametrize("path", INFERENCE_POSTS)
def test_nginx_resends_inference_posts_lost_to_a_broken_connection_once(path):
    location = _location("=", path)
    assert _directive(location, "proxy_next_upstream") == ["error", "timeout", "non_idempotent"]
    assert _directive(location, "proxy_next_upstream_tries") == ["2"]
    assert _directive(_location("=", "/topk"), "proxy_next_upstream") == ["error", "timeout"]
    # a resend is only ever for a request that got no answer: the retry window closes before a read timeout
    assert int(_directive(location, "proxy_next_upstream_timeout")[0].rstrip("s")) < int(
        _directive(location, "proxy_read_timeout")[0].rstrip("s"))


def test_nginx_never_retries_an_answer_so_a_503_marks_no_replica_down():
    """Only error and timeout count towards max_fails unless an http_5xx is listed: none is, anywhere."""
    for _, args, block in [("server", [], SERVER), *_find(SERVER, "location")]:
        for _, retry, _ in _find(block, "proxy_next_upstream"):
            assert set(retry) <= {"error", "timeout", "non_idempotent"}, f"location {args} retries {retry}"


def test_nginx_limits_requests_and_connections_per_client_address():
    zones = {args[1].split("=")[1].split(":")[0]: args for _, args, _ in _find(HTTP, "limit_req_zone")}
    assert all(args[0] == "$binary_remote_addr" for args in zones.values())
    assert {name: args[2] for name, args in zones.items()} == {
        "seq2seq_batch": "rate=100r/s", "seq2seq_manage": "rate=20r/s", "seq2seq_other": "rate=50r/s"}
    assert _one(HTTP, "limit_conn_zone")[1][:2] == ["$binary_remote_addr", "zone=seq2seq_conn:10m"]
    assert _directive(SERVER, "limit_conn") == ["seq2seq_conn", "128"]
    assert _directive(SERVER, "limit_req_status") == _directive(SERVER, "limit_conn_status") == ["429"]
    limited = {tuple(args): _directive(block, "limit_req")[0] for _, args, block in _find(SERVER, "location")
               if _find(block, "limit_req")}
    assert limited == {("=", "/predict/batch"): "zone=seq2seq_batch", ("=", "/topk/batch"): "zone=seq2seq_batch",
                       ("~", EVENTS): "zone=seq2seq_manage", ("/jobs",): "zone=seq2seq_manage",
                       ("/models",): "zone=seq2seq_manage", ("/",): "zone=seq2seq_other"}
    assert not _find(SERVER, "limit_req")  # single inference (/predict, /topk) is bounded by connections only


def test_nginx_never_resends_management_posts():
    for _, args, block in _find(SERVER, "location"):
        retry = [_directive(block, "proxy_next_upstream")] if _find(block, "proxy_next_upstream") else []
        if any("non_idempotent" in r for r in retry):
            assert args[0] == "=" and args[1] in INFERENCE_POSTS, f"location {args} resends POSTs"
    for prefix in ("/jobs", "/models"):
        assert "non_idempotent" not in _directive(_location(prefix), "proxy_next_upstream")


def test_nginx_streams_job_events_unbuffered():
    events = _location("~", EVENTS)
    assert _directive(events, "proxy_buffering") == ["off"]
    assert _directive(events, "proxy_cache") == ["off"]
    assert _directive(events, "proxy_read_timeout") == ["1h"]
    assert _directive(events, "proxy_http_version") == ["1.1"]
    assert re.match(EVENTS, "/jobs/abc123/events") and not re.match(EVENTS, "/jobs/abc/cancel")


NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


@needs_nginx
def test_nginx_conf_passes_nginx_t_with_local_upstreams(tmp_path):
    ports = [free_port() for _ in range(3)]
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf.render([f"127.0.0.1:{p}" for p in ports], f"127.0.0.1:{free_port()}", tmp_path))
    proc = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    upstream = _one(_one(_parse_nginx(conf.read_text()), "http")[2], "upstream", "seq2seq_api")[2]
    assert [args for _, args, _ in _find(upstream, "server")] == [
        [f"127.0.0.1:{p}", "max_fails=3", "fail_timeout=10s"] for p in ports]


class _Replica(http.server.ThreadingHTTPServer):
    """A fake API replica: answers `status` naming itself (and the body's size), or (drop=True) reads the request
    and hangs up."""
    daemon_threads = True

    def __init__(self, name: str, drop: bool = False, status: int = 200):
        self.name, self.drop, self.status, self.seen = name, drop, status, []
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                received = len(self.rfile.read(length))
                replica.seen.append((self.command, self.path, self.headers.get("X-Request-ID")))
                if replica.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = json.dumps({"replica": replica.name, "received": received}).encode()
                self.send_response(replica.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _start_balancer(tmp_path: Path, replicas: list[_Replica]):
    """The shipped configuration in front of `replicas`; yields nginx's port."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf.render([r.address for r in replicas], f"127.0.0.1:{port}", tmp_path))
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def listening() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        poll(listening, 10, message="nginx listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for replica in replicas:
            replica.shutdown()
            replica.server_close()


@pytest.fixture
def balancer(tmp_path):
    replicas = [_Replica("dropper", drop=True), _Replica("healthy")]
    for port in _start_balancer(tmp_path, replicas):
        yield port, replicas


@pytest.fixture
def busy_balancer(tmp_path):
    """One replica answering every request with the API's back-pressure (503), one answering 200."""
    replicas = [_Replica("busy", status=503), _Replica("healthy")]
    for port in _start_balancer(tmp_path, replicas):
        yield port, replicas


def _request(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b'{"start": 7}'):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@needs_nginx
def test_nginx_resends_inference_but_delivers_a_management_post_at_most_once(balancer):
    port, (dropper, healthy) = balancer
    # POST /jobs: round robin gives the dropper its turn; what it drops comes back 502, never resent
    jobs = [_request(port, "POST", "/jobs") for _ in range(4)]
    statuses = [status for status, _, _ in jobs]
    assert 502 in statuses and set(statuses) <= {200, 502}
    assert len(dropper.seen) + len(healthy.seen) == 4  # each POST reached exactly one replica
    assert statuses.count(200) == len([s for s in healthy.seen if s[1] == "/jobs"])
    _, headers, body = next(j for j in jobs if j[0] == 502)
    assert json.loads(body)["error"] == "bad_gateway" and headers["X-Request-ID"]
    # POST /predict: a dropped request goes on to the healthy replica
    before = len(dropper.seen)
    answers = [_request(port, "POST", "/predict", {"X-Request-ID": f"rid-{i}"}) for i in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    assert all(json.loads(body)["replica"] == "healthy" for _, _, body in answers)
    predicts = [s for s in healthy.seen if s[1] == "/predict"]
    assert [rid for _, _, rid in predicts] == [f"rid-{i}" for i in range(4)]  # X-Request-ID passed through
    assert len(dropper.seen) - before <= 1  # max_fails=3: after its third failure the dropper gets a rest
    # a request without an id gets nginx's
    _request(port, "GET", "/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", healthy.seen[-1][2])


@needs_nginx
@pytest.mark.parametrize("path", ["/predict", "/topk/batch", "/jobs"])
def test_nginx_passes_a_503_on_and_keeps_sending_to_that_replica(busy_balancer, path):
    port, (busy, healthy) = busy_balancer
    answers = [_request(port, "POST", path) for _ in range(10)]
    statuses = [status for status, _, _ in answers]
    # each request reached exactly one replica: a 503 is the client's answer, not a reason to try the other
    assert len(busy.seen) + len(healthy.seen) == 10
    assert statuses.count(503) == len(busy.seen) and statuses.count(200) == len(healthy.seen)
    assert all(json.loads(body)["replica"] == ("busy" if status == 503 else "healthy") for status, _, body in answers)
    # and round robin goes on giving the busy replica its turn past max_fails=3: it was never marked down (a
    # replica marked down gets nothing for fail_timeout=10 s, so it would have seen at most 3)
    assert len(busy.seen) >= 4 and 503 in statuses[-3:]


@needs_nginx
def test_nginx_refuses_bodies_over_1_mib_except_under_jobs(busy_balancer):
    port, (busy, healthy) = busy_balancer
    two_mib = b"[" + b"7," * (1024 * 1024) + b"7]"
    for path in ("/predict", "/predict/batch", "/topk/batch", "/models/m-1/activate"):
        status, headers, body = _request(port, "POST", path, body=two_mib)
        assert status == 413 and json.loads(body)["error"] == "payload_too_large", path
        assert "over 1 MiB" in json.loads(body)["message"] and headers["X-Request-ID"]
    assert busy.seen == healthy.seen == []  # refused before a byte reached a replica
    answers = [_request(port, "POST", "/jobs", body=two_mib) for _ in range(2)]  # one reaches each replica
    assert sorted(json.loads(body)["received"] for _, _, body in answers) == [len(two_mib)] * 2
    nine_mib = b"x" * (9 * 1024 * 1024)
    assert json.loads(_request(port, "POST", "/jobs", body=nine_mib)[2])["received"] == len(nine_mib)
    status, _, body = _request(port, "POST", "/jobs", body=b"x" * (10 * 1024 * 1024 + 1))
    assert status == 413 and "over 10 MiB" in json.loads(body)["message"]
    assert len(busy.seen) + len(healthy.seen) == 3


@needs_nginx
def test_nginx_answers_429_to_a_client_past_its_management_rate(busy_balancer):
    port, (busy, healthy) = busy_balancer
    # 20/s with a burst of 50: of 300 requests sent one after another, at least the burst passes, and unless
    # they took over 12 s the rest cannot all have passed
    answers = [_request(port, "GET", "/models") for _ in range(300)]
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503, 429} and statuses.count(429) > 0
    assert 300 - statuses.count(429) >= 51 and len(busy.seen) + len(healthy.seen) == 300 - statuses.count(429)
    _, headers, body = next(a for a in answers if a[0] == 429)
    assert json.loads(body)["error"] == "too_many_requests" and headers["Retry-After"] == "1"
    # single inference has no rate limit: the same client is still served there
    assert {_request(port, "POST", "/predict")[0] for _ in range(4)} == {200, 503}
