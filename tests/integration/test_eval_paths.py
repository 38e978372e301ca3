"""``atomthink eval --paths``: path-level strategies read saved paths through the service's own solver and
strategies, on the shipped tiny models in process; a replay answers as the live service does for the same jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR, Settings
from atomthink.steps import extract_answer, is_final
from atomthink_serve.embedded import build_runtime
from research.data.records import read_jsonl, write_dataset
from research.eval.paths import SavedPathsClient
from research.eval.runner import RuntimeSolveClient, SolveRequestError
from service.schemas import SolveParams, SolveResponse

pytestmark = pytest.mark.integration


def same_solve(a: SolveResponse, b: SolveResponse) -> None:
    assert [s.text for s in a.steps] == [s.text for s in b.steps]
    assert (a.answer, a.final, a.votes) == (b.answer, b.final, b.votes)
    assert (a.stats.generated_tokens, a.stats.prompt_tokens) == (b.stats.generated_tokens, b.stats.prompt_tokens)
    assert (a.stats.policy_calls, a.stats.prm_calls) == (b.stats.policy_calls, b.stats.prm_calls)


async def test_saved_paths_replay_the_live_service(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 2, 20261206, 1, progress=False)
    problems = read_jsonl(data / "problems.jsonl")
    folder = tmp_path / "paths"
    settings = Settings(policy_model=str(DEFAULT_POLICY_DIR), prm_model=str(DEFAULT_PRM_DIR), torch_threads=1)
    async with build_runtime(settings) as runtime:
        live = RuntimeSolveClient(runtime)
        saved = SavedPathsClient(live, folder, n=4)
        for i, problem in enumerate(problems):
            image = (data / problem["image"]).read_bytes()
            base = {"question": problem["question"], "mode": "slow", "seed": 11 + i, "temperature": 1.6,
                    "top_p": 1.0, "top_k": 0, "max_steps": 12}  # fmt: skip

            # The record samples as a path-level request does: DeepConf of 4 replayed equals DeepConf of 4 served live.
            deepconf = SolveParams(**base, strategy="deepconf", candidates=4)
            same_solve(await saved.solve(deepconf, image), await live.solve(deepconf, image))
            assert len(list(folder.glob("*.json.gz"))) == i + 1
            record = await saved.load_or_record(deepconf, image)
            assert len(record.paths) == 4 and all(
                len(s) == len(p) for s, p in zip(record.scores, record.paths, strict=True)
            )

            # A vote of 2 reads the first two saved paths, and only them.
            vote = await saved.solve(SolveParams(**base, strategy="majority", candidates=2), image)
            first_two = [[c.text for c in path] for path in record.paths[:2]]
            finished = [texts for texts in first_two if is_final(texts[-1])]
            assert vote.stats.policy_calls == sum(len(t) for t in first_two) - 1 + (not finished)
            if finished:
                assert [s.text for s in vote.steps] in finished
                assert vote.votes is not None and sum(vote.votes.values()) == len(finished)
                assert set(vote.votes) == {extract_answer(texts[-1]) for texts in finished}
                tokens = sum(c.num_tokens for path in record.paths[:2] for c in path)
                assert vote.stats.generated_tokens == tokens

            # Best-of-N's PRM scores are the saved ones: the chosen path's step scores equal the record's.
            best = await saved.solve(SolveParams(**base, strategy="best_of_n", candidates=4), image)
            chosen = next(j for j, path in enumerate(record.paths) if [c.text for c in path] == [s.text for s in
                          best.steps][: len(path)])  # fmt: skip
            assert [s.score for s in best.steps][: len(record.scores[chosen])] == pytest.approx(record.scores[chosen])

            # More paths than the record holds: a clear, final refusal.
            with pytest.raises(SolveRequestError, match="--paths-n is 4") as refused:
                await saved.solve(SolveParams(**base, strategy="majority", candidates=5), image)
            assert not refused.value.transient

            # A step-level strategy samples afresh through the live service.
            beam = SolveParams(**base, strategy="beam", candidates=2, beam_width=2)
            same_solve(await saved.solve(beam, image), await live.solve(beam, image))
            # So do whole cot paths (the record holds step-by-step paths), and more of them than the record holds.
            whole = SolveParams(**base, strategy="majority", candidates=5, path_sampling="cot")
            same_solve(await saved.solve(whole, image), await live.solve(whole, image))
        stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.json.gz")}
        await saved.solve(SolveParams(**base, strategy="self_certainty", candidates=3), image)
        assert {p: p.stat().st_mtime_ns for p in folder.glob("*.json.gz")} == stamps  # read, not recorded again
