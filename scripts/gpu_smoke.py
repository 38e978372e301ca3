"""GPU smoke test: one slow-mode (PRM-guided beam) solve with the vLLM in-process policy and a PRM.

Run where a GPU and the ``vllm`` extra exist (``pip install -e ".[vllm]"``)::

    python scripts/gpu_smoke.py --policy-model /models/AtomThink-LLaVA-Llama3-8B --prm-model /models/atomthink-prm
    # PRM behind its own vLLM server instead of in process (transformers on CUDA):
    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling --served-model-name prm --port 8002 &
    ATOMTHINK_PRM_BACKEND=openai-pooling ATOMTHINK_PRM_BASE_URL=http://127.0.0.1:8002/v1 \\
        python scripts/gpu_smoke.py --policy-model Qwen/Qwen2-VL-7B-Instruct --prm-model Qwen/Qwen2.5-Math-PRM-7B

Other settings come from ``ATOMTHINK_*`` variables as usual. Prints the response as JSON and exits non-zero when
the solve produced no scored step.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atomthink.settings import Settings  # noqa: E402
from atomthink_serve.embedded import build_runtime  # noqa: E402
from service.schemas import SolveParams  # noqa: E402
from workers.backends.registry import close_backend, load_prm  # noqa: E402
from workers.backends.vllm_policy import VllmPolicy  # noqa: E402


def default_image() -> bytes:
    """A right triangle with legs 3 and 4, drawn as a PNG."""
    image = Image.new("RGB", (336, 336), "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(40, 296), (296, 296), (40, 104)], outline="black", width=3)
    draw.text((160, 305), "4", fill="black")
    draw.text((20, 195), "3", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def solve_once(settings: Settings, image: bytes, question: str, candidates: int) -> dict[str, object]:
    started = time.perf_counter()
    policy = await asyncio.to_thread(VllmPolicy.from_settings, settings)
    prm = await asyncio.to_thread(load_prm, settings)
    loaded = time.perf_counter()
    try:
        async with build_runtime(settings, policy=policy, prm=prm) as runtime:
            params = SolveParams(
                question=question, mode="slow", strategy="beam", candidates=candidates, beam_width=2, max_steps=8,
                seed=1,
            )  # fmt: skip
            response = await runtime.solve(params, image)
    finally:
        close_backend(policy)
        close_backend(prm)
    return {
        "load_s": round(loaded - started, 1),
        "solve_s": round(time.perf_counter() - loaded, 2),
        "response": response.model_dump(mode="json"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy-model", help="policy checkpoint (directory or hub id)")
    parser.add_argument("--prm-model", help="PRM checkpoint (directory or hub id)")
    parser.add_argument("--image", type=Path, help="PNG/JPEG to ask about (default: a drawn right triangle)")
    parser.add_argument("--question", default="The legs of the right triangle are 3 and 4. How long is the hypotenuse?")
    parser.add_argument("--candidates", type=int, default=3)
    args = parser.parse_args()
    overrides: dict[str, object] = {"policy_backend": "vllm"}
    if args.policy_model:
        overrides["policy_model"] = args.policy_model
    if args.prm_model:
        overrides["prm_model"] = args.prm_model
    settings = Settings(**overrides)  # type: ignore[arg-type]
    image = args.image.read_bytes() if args.image else default_image()
    result = asyncio.run(solve_once(settings, image, args.question, args.candidates))
    print(json.dumps(result, indent=2))
    steps = result["response"]["steps"]  # type: ignore[index]
    return 0 if any(step["score"] is not None for step in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
