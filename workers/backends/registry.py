"""Backend selection from settings: the one place that maps ``policy_backend`` / ``prm_backend`` to a class.

Concrete backends are imported only when chosen, so a CPU install never imports vLLM and a remote setup never
loads torch models.
"""

from __future__ import annotations

from atomthink.settings import Settings
from workers.backends.base import PolicyBackend, StepScorer


def load_policy(settings: Settings) -> PolicyBackend:
    """The policy backend ``settings.policy_backend`` names, built from settings."""
    if settings.policy_backend == "vllm":
        from workers.backends.vllm_policy import VllmPolicy

        return VllmPolicy.from_settings(settings)
    if settings.policy_backend == "openai":
        from workers.backends.openai_policy import OpenAIPolicy

        return OpenAIPolicy.from_settings(settings)
    from workers.backends.hf_policy import TransformersPolicy

    return TransformersPolicy(
        settings.policy_model, preset=settings.prompt_preset, device=settings.device, dtype=settings.dtype
    )


def load_prm(settings: Settings) -> StepScorer:
    """The PRM backend ``settings.prm_backend`` names, built from settings."""
    if settings.prm_backend == "openai-pooling":
        from workers.backends.openai_prm import OpenAIPoolingPrm

        return OpenAIPoolingPrm.from_settings(settings)
    if settings.prm_backend == "openai-completions":
        from workers.backends.openai_prm import OpenAICompletionsPrm

        return OpenAICompletionsPrm.from_settings(settings)
    from workers.backends.hf_prm import TransformersPrm

    return TransformersPrm(settings.prm_model, preset=settings.prm_preset, device=settings.device, dtype=settings.dtype)


def close_backend(backend: object) -> None:
    """Release what a backend holds (engine, loop thread, connections) when it has a ``close``."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()
