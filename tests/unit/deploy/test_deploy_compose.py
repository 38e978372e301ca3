"""docker-compose.yml, the Prometheus configs and the Grafana dashboards: they parse, and every image, command, port,
``ATOMTHINK_*`` variable, scrape target and metric they name exists in this code base. PromQL is parsed by
Prometheus's own ``promtool`` (Debian package ``prometheus``; those tests skip without it)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from atomthink.settings import Settings
from atomthink_serve.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OWN_IMAGES = {"atomthink-serve:cpu": REPO / "Dockerfile", "atomthink-serve:cuda": REPO / "Dockerfile.cuda"}
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
# vLLM 0.33's metric names (/work/shared/notes/vllm.md); histograms are read through _bucket/_sum/_count.
VLLM_METRICS = {
    "vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:request_queue_time_seconds", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
    "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_params_n",
}  # fmt: skip
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus (scripts/install.sh)"
)


def load_dashboards_module() -> ModuleType:
    """``deploy/grafana/dashboards.py`` (not an installed package)."""
    spec = importlib.util.spec_from_file_location("atomthink_dashboards", GRAFANA / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


DASHBOARDS = load_dashboards_module()


def boards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def atomthink_env(service: dict[str, Any]) -> dict[str, str]:
    return {k.removeprefix("ATOMTHINK_").lower(): v for k, v in env_of(service).items() if k.startswith("ATOMTHINK_")}


def profiles(name: str) -> set[str]:
    return set(SERVICES[name].get("profiles", []))


def workers(role: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in SERVICES.items() if s.get("command", [])[:3] == ["atomthink", "worker", role]}


def workers_of(name: str) -> bool:
    return SERVICES[name].get("command", [])[:2] == ["atomthink", "worker"]


def dns_names(name: str) -> set[str]:
    aliases = {a for net in (SERVICES[name].get("networks") or {}).values() for a in (net or {}).get("aliases", [])}
    return {name, *aliases}


def container_ports(service: dict[str, Any]) -> set[int]:
    published = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return published | {int(p) for p in service.get("expose", [])}


# --- compose ----------------------------------------------------------------------------------------------------


def test_images_exist_or_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if image.startswith("atomthink-serve"):
            assert image in OWN_IMAGES and OWN_IMAGES[image].is_file(), (name, image)
        else:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"pin {image}"
        if "build" in service:
            build = service["build"]
            context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (build["context"], build.get(
                "dockerfile", "Dockerfile"))  # fmt: skip
            assert OWN_IMAGES[image] == (REPO / context / dockerfile).resolve(), f"{name} builds {image} elsewhere"
    built = {s["image"] for s in SERVICES.values() if "build" in s}
    used = {s["image"] for s in SERVICES.values() if s["image"] in OWN_IMAGES}
    assert used <= built, f"images used but never built by compose: {used - built}"


def test_atomthink_commands_parse_with_the_cli() -> None:
    parser = build_parser()
    for name, service in SERVICES.items():
        if service["image"] in OWN_IMAGES:
            command = service.get("command", ["atomthink", "serve"])  # the images' CMD
            assert command[0] == "atomthink", name
            parser.parse_args(command[1:])


def test_atomthink_variables_are_settings_and_validate() -> None:
    fields = set(Settings.model_fields)
    for name, service in SERVICES.items():
        own = atomthink_env(service)
        assert not set(own) - fields, f"{name}: no such settings {set(own) - fields}"
        if own:
            Settings(**own)  # type: ignore[arg-type]  # values validate: backend names, ranges, URLs


def test_profiles_give_one_policy_and_one_prm_worker_each() -> None:
    for name in ("redis", "gateway", "prometheus", "grafana"):
        assert not profiles(name), f"{name} runs in every profile"
    for role in ("policy", "prm"):
        by_profile = {profile: [n for n in workers(role) if profile in profiles(n)] for profile in ("cpu", "gpu")}
        assert all(len(names) == 1 for names in by_profile.values()), by_profile
        assert all(profiles(n) for n in workers(role)), f"a {role} worker runs outside a profile"
        cpu, gpu = by_profile["cpu"][0], by_profile["gpu"][0]
        assert atomthink_env(SERVICES[cpu]).get(f"{role}_backend", "transformers") == "transformers"
        assert atomthink_env(SERVICES[gpu])[f"{role}_backend"] == ("openai" if role == "policy" else "openai-pooling")
        assert dns_names(cpu) & dns_names(gpu), "CPU and GPU workers share a DNS name for Prometheus"
    assert all(name.startswith("vllm-") for name in SERVICES if profiles(name) == {"gpu"} and not workers_of(name))


def test_everything_talks_to_redis_and_the_gateway_is_published() -> None:
    gateway = SERVICES["gateway"]
    assert gateway["command"] == ["atomthink", "gateway"]
    for name, service in SERVICES.items():
        if service["image"] in OWN_IMAGES:
            own = atomthink_env(service)
            assert own["queue"] == "redis" and own["redis_url"].split("//")[1].split(":")[0] == "redis", name
            assert "redis" in service["depends_on"], name
    port = int(atomthink_env(gateway)["port"])
    assert f"{port}:{port}" in gateway["ports"]


@pytest.mark.parametrize("role", ["policy", "prm"])
def test_gpu_workers_reach_their_vllm_server(role: str) -> None:
    [name] = [n for n in workers(role) if "gpu" in profiles(n)]
    own = atomthink_env(SERVICES[name])
    server = SERVICES[f"vllm-{role}"]
    url = re.fullmatch(r"http://([\w-]+):(\d+)/v1", own[f"{role}_base_url"])
    assert url is not None and url.group(1) == f"vllm-{role}"
    args = server["command"]
    assert server["entrypoint"] == ["vllm", "serve"] and "gpu" in profiles(f"vllm-{role}")
    assert args[args.index("--port") + 1] == url.group(2) and int(url.group(2)) in container_ports(server)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--served-model-name") + 1] == own.get(f"{role}_served_name", role)
    assert f"vllm-{role}" in SERVICES[name]["depends_on"]
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices and all("gpu" in d["capabilities"] for d in devices)
    if role == "prm":
        assert args[args.index("--runner") + 1] == "pooling"  # token classification for openai-pooling


def test_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus -------------------------------------------------------------------------------------------------


def scrape_targets() -> dict[str, list[str]]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return {
        job["job_name"]: [t for group in job.get("static_configs", []) for t in group["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_the_gateway_every_worker_and_vllm() -> None:
    names = {alias: name for name in SERVICES for alias in dns_names(name)}
    targets = scrape_targets()
    scraped = set()
    for job, hosts in targets.items():
        for target in hosts:
            host, port = target.rsplit(":", 1)
            if host == "localhost":
                continue
            assert host in names, f"{job}: no compose service or alias {host}"
            scraped |= {n for n, s in SERVICES.items() if host in dns_names(n)}
            for name in (n for n in SERVICES if host in dns_names(n)):
                assert int(port) in container_ports(SERVICES[name]), f"{name} does not expose {port}"
                own = atomthink_env(SERVICES[name])
                if workers_of(name):
                    assert int(own["metrics_port"]) == int(port)
                elif name == "gateway":
                    assert int(own["port"]) == int(port)
    expected = {n for n in SERVICES if workers_of(n) or n == "gateway" or n.startswith("vllm-")}
    assert expected <= scraped, f"not scraped: {expected - scraped}"
    assert {"atomthink-gateway", "atomthink-worker", "vllm"} <= set(targets)
    mount = next(v for v in SERVICES["prometheus"]["volumes"] if "prometheus.yml" in v)
    assert mount.split(":")[0] == "./deploy/prometheus/prometheus.yml"


@needs_promtool
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-k8s.yml"])
def test_prometheus_configs_pass_promtool(name: str, tmp_path: Path) -> None:
    path = PROMETHEUS / name
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    if result.returncode and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check the rest (relabelling, regexes) with the
        # discovery swapped for an equivalent static target.
        config = yaml.safe_load(path.read_text())
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
            job["static_configs"] = [{"targets": ["10.0.0.1:9400"]}]
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_scrape_config_matches_the_pod_annotations() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus-k8s.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    relabels = jobs["atomthink-pods"]["relabel_configs"]
    renamed = {r["replacement"] for r in relabels if r.get("target_label") == "job"}
    assert renamed == {"atomthink-gateway", "atomthink-worker"}  # the compose job names, which the dashboards use
    for path in sorted((REPO / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] != "Deployment":
                continue
            template = doc["spec"]["template"]
            annotations = template["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/scrape") == "true":
                ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
                assert int(annotations["prometheus.io/port"]) in ports, path.name
                app = template["metadata"]["labels"]["app.kubernetes.io/name"]
                assert any(re.fullmatch(r["regex"], app) for r in relabels if r.get("target_label") == "job"), app


# --- Grafana ----------------------------------------------------------------------------------------------------


def test_dashboards_are_generated_from_code() -> None:
    assert DASHBOARDS.main(["--check"]) == 0, "run: python deploy/grafana/dashboards.py"
    assert set(boards()) == set(DASHBOARDS.DASHBOARDS)


def test_grafana_provisioning_matches_compose_and_dashboards() -> None:
    provisioning = GRAFANA / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in SERVICES["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "atomthink.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for name, board in boards().items():
        uids = {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p}
        uids |= {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])}
        assert uids == {source["uid"]}, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"


def exported_metric_names() -> set[str]:
    """Every series name the project's metric modules can export (histograms as _bucket/_sum/_count)."""
    from atomthink.queue import metrics as queue_metrics
    from service import metrics as gateway_metrics
    from workers import metrics as worker_metrics

    names: set[str] = set()
    for module in (gateway_metrics, worker_metrics, queue_metrics):
        for value in vars(module).values():
            for family in value.describe() if isinstance(value, MetricWrapperBase) else []:
                if family.type == "histogram":
                    names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
                else:
                    names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_metric_a_panel_reads_exists() -> None:
    exported = exported_metric_names()
    vllm = {f"{n}{s}" for n in VLLM_METRICS for s in ("", "_bucket", "_sum", "_count")}
    for name, board in boards().items():
        for title, expr in DASHBOARDS.queries(board):
            used = set(re.findall(r"\b(?:atomthink_\w+|vllm:\w+|up(?=\{))", expr))
            assert used, f"{name} / {title}: reads no AtomThink or vLLM metric"
            unknown = used - exported - vllm - {"up"}
            assert not unknown, f"{name} / {title}: unknown metrics {unknown}"


def test_the_issue_s_panels_are_there() -> None:
    exprs = {name: "\n".join(expr for _, expr in DASHBOARDS.queries(board)) for name, board in boards().items()}
    main, vllm = exprs["atomthink.json"], exprs["vllm.json"]
    for q in ("0.5", "0.95", "0.99"):
        pattern = rf"histogram_quantile\({q}, sum by \(le, mode, strategy, candidates\) \(rate\(atomthink_solve_latency"
        assert re.search(pattern, main), f"p{q} latency against candidates per mode and strategy"
    for metric in ("atomthink_queue_waiting_jobs", "atomthink_queue_pending_jobs", "atomthink_queue_wait_seconds",
                   "atomthink_worker_pickup_seconds", "atomthink_worker_batch_jobs", "atomthink_worker_batch_rows",
                   "atomthink_job_latency_seconds", "atomthink_worker_model_call_seconds",
                   "atomthink_queue_redeliveries_total", "atomthink_queue_dead_letters_total"):  # fmt: skip
        assert metric in main, metric
    assert 'atomthink_rejected_requests_total{reason="overloaded"}' in main
    tokens = r"sum by \(mode, strategy, candidates\) \(rate\(atomthink_solve_generated_tokens_sum"
    assert re.search(tokens, main), "tokens per solve against candidate count"
    for metric in ("atomthink_solve_paths_total", "atomthink_saved_paths_total", "atomthink_saved_tokens_total"):
        assert metric in main, metric
    assert re.search(r"sum by \(status\) \(rate\(atomthink_solve_requests_total", main)
    for metric in ("vllm:kv_cache_usage_perc", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds"):
        assert metric in vllm, metric


@needs_promtool
def test_every_panel_query_parses(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule: ``promtool check rules`` parses it."""
    rules = []
    for name, board in boards().items():
        for i, (_title, expr) in enumerate(DASHBOARDS.queries(board)):
            rules.append({"record": f"{Path(name).stem}:panel_{i}", "expr": DASHBOARDS.render(expr, board)})
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout

    path.write_text(
        yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"record": "x", "expr": "sum(rate(x[1m])"}]}]})
    )
    assert subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True).returncode != 0


def test_gateway_takes_api_keys_from_an_env_file_outside_git() -> None:
    [env_file] = SERVICES["gateway"]["env_file"]
    assert env_file["required"] is False  # absent: the one-node demo stays open
    assert not any("API_KEYS" in name for name in env_of(SERVICES["gateway"]))  # no key in the compose file
    assert f"/{env_file['path']}" in (REPO / ".gitignore").read_text().splitlines()
    example = (REPO / f"{env_file['path']}.example").read_text()
    lines = [line for line in example.splitlines() if line and not line.startswith("#")]
    name, value = lines[0].split("=", 1)
    assert Settings(**{name.removeprefix("ATOMTHINK_").lower(): json.loads(value)}).api_keys  # the example parses
