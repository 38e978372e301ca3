"""Policy backend on vLLM in process (``AsyncLLM``), for GPU nodes. Needs the ``vllm`` extra.

One engine request per job, with ``n`` children; the engine batches all requests itself. ``generate`` is
synchronous (workers call it from a thread), so the engine lives on an event loop thread of its own. The pure
functions below build the engine arguments, prompts and sampling parameters; they are unit-tested without vLLM.
vLLM is imported only inside the functions that need it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from atomthink.context import render_prompt_text
from atomthink.prompts import resolve_prompt_preset
from atomthink.protocol import Candidate, FinishReason
from atomthink.protocol import SamplingParams as JobSampling
from atomthink.settings import Settings
from workers.backends.base import EngineDead, GenerationRequest
from workers.backends.loop_thread import LoopThread

log = logging.getLogger(__name__)

SEED_STRIDE = 64
"""vLLM gives child ``i`` of a request the seed ``seed + i``; job seeds are spaced this far apart (the protocol's
largest ``n``) so the children of different jobs never share a seed."""


def engine_kwargs(settings: Settings, *, multimodal: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``AsyncEngineArgs`` for the policy, from settings."""
    kwargs: dict[str, Any] = {
        "model": settings.policy_model,
        "served_model_name": settings.policy_served_name,
        "dtype": settings.dtype,
        "gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
        "tensor_parallel_size": settings.vllm_tensor_parallel_size,
        "enable_prefix_caching": settings.vllm_enable_prefix_caching,
        "enforce_eager": settings.vllm_enforce_eager,
        "seed": 0,
    }
    if settings.vllm_enable_chunked_prefill is not None:
        kwargs["enable_chunked_prefill"] = settings.vllm_enable_chunked_prefill
    if settings.vllm_max_model_len is not None:
        kwargs["max_model_len"] = settings.vllm_max_model_len
    if multimodal:
        kwargs["limit_mm_per_prompt"] = {"image": 1}
    return kwargs


def build_prompt(text: str, request: GenerationRequest, *, multimodal: bool) -> dict[str, Any]:
    """vLLM's prompt dict: the text with the model's image placeholder, the image in ``multi_modal_data``."""
    prompt: dict[str, Any] = {"prompt": text}
    if request.image is not None and multimodal:
        prompt["multi_modal_data"] = {"image": request.image.convert("RGB")}
    return prompt


def engine_seed(seed: int, n: int) -> int:
    """Seed of the engine request of a job; children ``0..n-1`` of jobs with distinct seeds never collide."""
    if n > SEED_STRIDE:
        raise ValueError(f"n={n} is over the seed stride {SEED_STRIDE}")
    return seed * SEED_STRIDE


def sampling_kwargs(sampling: JobSampling, *, stop: str | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` (``output_kind`` is added where vLLM is imported).

    ``top_k`` is always explicit (-1 = off in vLLM, 0 in our protocol). ``stop`` is the step delimiter for step
    prompts, kept in the output so ``candidate_from_output`` can tell a delimiter stop from EOS.
    """
    kwargs: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "max_tokens": sampling.max_new_tokens,
        "seed": engine_seed(sampling.seed, sampling.n),
    }
    if sampling.logprobs is not None:
        kwargs["logprobs"] = sampling.logprobs
    if stop is not None:
        kwargs["stop"] = [stop]
        kwargs["include_stop_str_in_output"] = True
    return kwargs


class CompletionLike(Protocol):
    """What ``candidate_from_output`` reads of ``vllm.CompletionOutput``."""

    @property
    def text(self) -> str: ...
    @property
    def token_ids(self) -> Sequence[int]: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def stop_reason(self) -> int | str | None: ...


def candidate_from_output(output: CompletionLike, *, delimiter: str | None) -> Candidate:
    """Map one child to a ``Candidate``: a stop on the delimiter, EOS (``stop`` with no stop string) or length."""
    text = output.text
    finish: FinishReason
    if output.finish_reason == "length":
        finish = "length"
    elif delimiter is not None and output.stop_reason == delimiter:
        finish = "delimiter"
    else:
        finish = "eos"
    if delimiter is not None and delimiter in text:
        text = text[: text.index(delimiter)]
        finish = "delimiter"
    return Candidate(text=text.strip(), num_tokens=len(output.token_ids), finish_reason=finish)


class LogprobLike(Protocol):
    """What ``logprobs_from_output`` reads of ``vllm.logprobs.Logprob``."""

    @property
    def logprob(self) -> float: ...
    @property
    def rank(self) -> int | None: ...


def logprobs_from_output(
    positions: Sequence[Mapping[int, LogprobLike]], token_ids: Sequence[int], k: int
) -> tuple[list[float], list[list[float]]]:
    """The sampled token's log-probability and the ``k`` highest at each position, from a child's ``logprobs`` (per
    position a map from token id to ``Logprob``: the top ``k`` by rank plus the sampled token, whatever its rank)."""
    if len(positions) != len(token_ids):
        raise RuntimeError(f"vLLM reported log-probabilities for {len(positions)} of {len(token_ids)} tokens")
    picked: list[float] = []
    top: list[list[float]] = []
    for position, token_id in zip(positions, token_ids, strict=True):
        picked.append(float(position[token_id].logprob))
        ranked = sorted((lp for lp in position.values() if lp.rank is not None and lp.rank <= k), key=_rank)
        top.append([float(lp.logprob) for lp in ranked[:k]])
    return picked, top


def _rank(logprob: LogprobLike) -> int:
    return logprob.rank if logprob.rank is not None else 0


def _load_template_owner(model: str) -> tuple[Any, bool]:
    """The processor (multimodal checkpoints) or tokenizer whose chat template renders prompts."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(model)
    if hasattr(config, "vision_config"):
        return AutoProcessor.from_pretrained(model), True
    return AutoTokenizer.from_pretrained(model), False


class VllmPolicy:
    """``PolicyBackend`` on an in-process ``AsyncLLM``; every job of a batch is one engine request, all at once."""

    def __init__(
        self,
        engine_args: dict[str, Any],
        *,
        preset: str = "auto",
        template_owner: Any = None,
        multimodal: bool | None = None,
        timeout_s: float | None = None,
    ) -> None:
        model = str(engine_args["model"])
        if template_owner is None:
            template_owner, detected = _load_template_owner(model)
            multimodal = detected if multimodal is None else multimodal
        self.template_owner = template_owner
        self.multimodal = bool(multimodal)
        self.preset = resolve_prompt_preset(preset, model)
        self.name = Path(model).name
        self.timeout_s = timeout_s
        self._calls = 0
        self._loop = LoopThread("vllm-policy")
        try:
            self._engine: Any = self._loop.run(self._start(engine_args))
        except BaseException:
            self._loop.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> VllmPolicy:
        template_owner, multimodal = _load_template_owner(settings.policy_model)
        return cls(
            engine_kwargs(settings, multimodal=multimodal),
            preset=settings.prompt_preset,
            template_owner=template_owner,
            multimodal=multimodal,
            timeout_s=settings.job_timeout_s,
        )

    @staticmethod
    async def _start(engine_args: dict[str, Any]) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))

    @property
    def model_calls(self) -> int:
        return self._calls

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        self._calls += 1
        return self._loop.run(self._generate_all(requests), self.timeout_s)

    async def agenerate(self, request: GenerationRequest) -> list[Candidate]:
        """One request's candidates, awaited from the worker's loop (continuous feeding): the engine request runs
        on the engine's loop thread and joins the running batch at once."""
        self._calls += 1
        return await self._loop.arun(self._generate_one(request), self.timeout_s)

    async def _generate_all(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def check_health(self) -> None:
        """A one-token greedy request through the engine (it joins the running batch): returns when the engine
        answers; ``EngineDead`` when its process died. The caller bounds the wait (a hung engine never answers)."""
        await self._loop.arun(self._probe())

    async def _probe(self) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._raise_if_dead()
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, output_kind=RequestOutputKind.FINAL_ONLY)
        try:
            async for _ in self._engine.generate({"prompt": "1"}, params, request_id=f"probe-{uuid.uuid4().hex}"):
                pass
        except Exception as exc:
            self._raise_if_dead(exc)
            raise

    def _raise_if_dead(self, exc: BaseException | None = None) -> None:
        """``EngineDead`` when the engine is gone (vLLM's ``EngineDeadError``, or its ``errored`` flag)."""
        dead = self._engine.errored or type(exc).__name__ == "EngineDeadError"
        if dead:
            raise EngineDead(f"the vLLM engine is dead ({type(exc).__name__ if exc else 'errored'})") from exc

    async def _generate_one(self, request: GenerationRequest) -> list[Candidate]:
        try:
            return await self._generate_one_unchecked(request)
        except Exception as exc:
            self._raise_if_dead(exc)
            raise

    async def _generate_one_unchecked(self, request: GenerationRequest) -> list[Candidate]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        delimiter = self.preset.step_delimiter if request.kind == "step" else None
        text = render_prompt_text(self.template_owner, self.preset, request, multimodal=self.multimodal)
        prompt = build_prompt(text, request, multimodal=self.multimodal)
        params = SamplingParams(
            **sampling_kwargs(request.sampling, stop=delimiter), output_kind=RequestOutputKind.FINAL_ONLY
        )
        final = None
        async for output in self._engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            final = output
        if final is None or len(final.outputs) != request.sampling.n:
            got = 0 if final is None else len(final.outputs)
            raise RuntimeError(f"vLLM returned {got} of {request.sampling.n} candidates")
        children = sorted(final.outputs, key=lambda child: child.index)
        prompt_tokens = len(final.prompt_token_ids or [])
        candidates = [
            candidate_from_output(child, delimiter=delimiter).model_copy(update={"prompt_tokens": prompt_tokens})
            for child in children
        ]
        k = request.sampling.logprobs
        if k is None:
            return candidates
        reports = [logprobs_from_output(child.logprobs or [], child.token_ids, k) for child in children]
        return [
            c.model_copy(update={"token_logprobs": picked, "top_logprobs": top})
            for c, (picked, top) in zip(candidates, reports, strict=True)
        ]

    def close(self) -> None:
        """Shut the engine down and stop its loop thread."""

        async def _shutdown() -> None:
            self._engine.shutdown()

        try:
            self._loop.run(_shutdown(), 60)
        finally:
            self._loop.close()
