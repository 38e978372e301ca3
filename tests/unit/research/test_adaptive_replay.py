"""The offline replay of the served strategies (``research.training.adaptive``) on hand-made recorded paths."""

from __future__ import annotations

from research.eval.suites import RunConfig, custom_plan
from research.training import adaptive
from service.orchestrator.tree import SearchTree
from tests.unit.service import flat_config as strategies
from tests.unit.service.flat_config import SearchConfig

FINAL = "To sum up, the final answer is: "


def _recorded(answers: list[str]) -> tuple[list[list[str]], list[list[int]], list[list[float]]]:
    paths = [[f"p{i} reads", FINAL + a] for i, a in enumerate(answers)]
    tokens = [[10 + i, 5] for i in range(len(answers))]
    scores = [[0.9, 0.8] for _ in answers]
    return paths, tokens, scores


async def test_replay_hands_out_paths_in_order_and_counts_their_tokens() -> None:
    paths, tokens, scores = _recorded(["5", "5", "7", "5", "5", "9", "9", "9"])
    expander = adaptive.ReplayExpander(paths, tokens, scores)
    config = SearchConfig(candidates=8, adaptive=True, min_candidates=4, stop_votes=3, stop_share=0.75)
    outcome = await strategies.majority(expander, SearchTree(), config)
    assert outcome.paths == 4 and outcome.stop_reason == "certain" and outcome.answer == "5"
    assert expander.generated_tokens == sum(sum(t) for t in tokens[:4])
    fixed = adaptive.ReplayExpander(paths, tokens, scores)
    full = await strategies.majority(fixed, SearchTree(), SearchConfig(candidates=8))
    assert full.votes == {"5": 4, "7": 1, "9": 3} and fixed.generated_tokens == sum(sum(t) for t in tokens)


async def test_replay_scores_partial_paths_with_the_whole_path_scores() -> None:
    paths, tokens, scores = _recorded(["5", "7"])
    expander = adaptive.ReplayExpander(paths, tokens, [[0.9, 0.8], [0.3, 0.95]])
    assert await expander.score([["p1 reads"], paths[0]]) == [[0.3], [0.9, 0.8]]
    config = SearchConfig(candidates=2, aggregation="min", prune_fraction=0.5, prune_interval=1)
    outcome = await strategies.best_of_n(expander, SearchTree(), config)
    assert outcome.pruned == 1 and outcome.answer == "5"
    assert expander.generated_tokens == 10 + 5 + 11  # path 1 stopped after its first step


def test_compare_rows_cover_fixed_n_and_the_adaptive_variants() -> None:
    problems = [{"answer": "5"}, {"answer": "7"}]
    recorded = [_recorded(["5"] * 4), _recorded(["7", "9", "7", "9"])]
    paths, tokens, scores = ([r[k] for r in recorded] for k in range(3))
    rows = adaptive.compare(problems, paths, tokens, scores, sizes=(1, 2, 4))
    by_name = {r.name: r for r in rows}
    assert by_name["majority, N = 1"].accuracy == 1.0
    assert by_name["majority, N = 4"].mean_tokens == 10 + 11 + 12 + 13 + 4 * 5  # the same tokens in both problems
    assert {"adaptive majority", "adaptive weighted majority", "pruned"} <= {r.family for r in rows}
    assert "| majority, N = 4 | 100.0 |" in adaptive.markdown(rows)


def test_eval_plan_adds_adaptive_and_pruned_runs_above_the_first_wave() -> None:
    plan = custom_plan(["slow"], ["majority", "best_of_n"], [None], [4, 16], adaptive=True, prune_fraction=0.5)
    keys = [run.key for run in plan.runs]
    assert "slow-majority-min-n16-adaptive" in keys and "slow-best_of_n-min-n16-prune0.5" in keys
    assert "slow-majority-min-n4-adaptive" not in keys and len(keys) == 6
    config = RunConfig.make("slow", "majority", None, 16, adaptive=True)
    params = config.params("q?", None, seed=1, max_steps=5)
    assert params.adaptive is True and params.candidates == 16
    assert RunConfig.from_record(config.as_dict()) == config
    assert config.curve == "Majority vote (adaptive)" and "adaptive" in config.label
