"""The Kubernetes manifests and the CUDA Dockerfile: they parse, and every image, command, port, probe path,
``ATOMTHINK_*`` variable and Redis stream they name exists in this code base."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from atomthink.queue.keys import QueueKeys
from atomthink.settings import Settings
from atomthink_serve.cli import build_parser
from service.api.routes import router
from workers.health import LIVENESS_PATH, READINESS_PATH

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
OWN_IMAGES = {"atomthink-serve:cpu": REPO / "Dockerfile", "atomthink-serve:cuda": REPO / "Dockerfile.cuda"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def config() -> dict[str, str]:
    [configmap] = of_kind("ConfigMap")
    return dict(configmap["data"])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_atomthink_variables_are_settings_and_validate() -> None:
    fields = set(Settings.model_fields)
    for deployment, container in containers():
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if any(ref.get("configMapRef") for ref in container.get("envFrom", [])):
            env = {**config(), **env}
        own = {k.removeprefix("ATOMTHINK_").lower(): v for k, v in env.items() if k.startswith("ATOMTHINK_")}
        unknown = set(own) - fields
        assert not unknown, f"{deployment['metadata']['name']}/{container['name']}: no such settings {unknown}"
        if own:
            Settings(**own)  # values validate (backend names, ranges)


def test_images_and_commands_exist() -> None:
    parser = build_parser()
    for _, container in containers():
        image = container["image"]
        if image.startswith("atomthink-serve"):
            assert image in OWN_IMAGES and OWN_IMAGES[image].is_file(), image
            command = container["command"]
            assert command[0] == "atomthink"
            parser.parse_args(command[1:])  # a command the CLI knows, with valid arguments
        else:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"pin {image}"


def test_ports_probes_and_services_line_up() -> None:
    routes = {getattr(route, "path", None) for route in router.routes}
    metrics_port = int(config()["ATOMTHINK_METRICS_PORT"])
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for _, container in containers():
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container.get(probe)
            if spec and "httpGet" in spec:
                assert spec["httpGet"]["port"] in ports, (container["name"], probe)
                if container["image"] == "atomthink-serve:cpu":
                    assert spec["httpGet"]["path"] in routes
        if container.get("command", [])[:2] == ["atomthink", "worker"]:
            assert ports["metrics"] == metrics_port
            # the worker's own probes: liveness drops once its engine died or hung, readiness while it takes no jobs
            assert container["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": "metrics"}
            assert container["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": "metrics"}
    gateway = next(c for d, c in containers() if d["metadata"]["name"] == "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for service in of_kind("Service"):
        target = deployments[service["spec"]["selector"]["app.kubernetes.io/name"]]
        names = {p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_gpu_workers_request_gpus() -> None:
    for name in ("policy-worker", "prm-worker"):
        [deployment] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
        gpus = [
            c["resources"]["requests"].get("nvidia.com/gpu", 0)
            for c in deployment["spec"]["template"]["spec"]["containers"]
        ]
        assert sum(gpus) == 1, name


@pytest.mark.parametrize("role", ["policy", "prm"])
def test_keda_scales_each_worker_on_its_stream(role: str) -> None:
    keys = QueueKeys(config()["ATOMTHINK_KEY_PREFIX"])
    [scaled] = [s for s in of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == f"{role}-worker"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == keys.stream(role)  # type: ignore[arg-type]
    assert trigger["metadata"]["consumerGroup"] == keys.group
    redis_host = config()["ATOMTHINK_REDIS_URL"].split("//")[1].split(":")[0]
    assert trigger["metadata"]["address"].split(".")[0] == redis_host
    assert f"{role}-worker" in {d["metadata"]["name"] for d in of_kind("Deployment")}


def test_cuda_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (REPO / "Dockerfile.cuda").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^USER (?!root)\w+", text, re.M) and re.search(r"^HEALTHCHECK ", text, re.M)
    assert '".[vllm]"' in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / source).exists(), source


def test_gateway_reads_its_api_keys_from_a_secret() -> None:
    [(deployment, container)] = [(d, c) for d, c in containers() if c["name"] == "gateway"]
    env = {e["name"]: e["value"] for e in container["env"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    [mount] = [m for m in container["volumeMounts"] if env["ATOMTHINK_API_KEYS_FILE"].startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["secret"]["secretName"] == "atomthink-api-keys"
    assert not any("API_KEYS" in name and name != "ATOMTHINK_API_KEYS_FILE" for name in env)  # no key in the manifest
