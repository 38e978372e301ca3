"""Wire types of the step queue: what a job may carry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atomthink.protocol import PrmJob
from service.orchestrator.tree import SearchTree


def test_prm_job_known_scores_fit_their_paths() -> None:
    PrmJob(request_id="r", question="q", paths=[["a", "b"], ["c"]], known_scores=[[0.5], []])
    with pytest.raises(ValidationError, match="2 entries for 1 paths"):
        PrmJob(request_id="r", question="q", paths=[["a"]], known_scores=[[], []])
    with pytest.raises(ValidationError, match="2 known scores for a path of 1 steps"):
        PrmJob(request_id="r", question="q", paths=[["a"]], known_scores=[[0.1, 0.2]])


def test_known_scores_come_from_the_nearest_scored_ancestor() -> None:
    tree = SearchTree()
    first = tree.add(tree.root, "x = 1")
    second = tree.add(first, "y = 2")
    third = tree.add(second, "z = 3")
    assert third.known_scores() == []
    first.path_scores = [0.7]
    assert third.known_scores() == [0.7]  # second was never scored (pruned best-of-N scores every few steps)
    second.path_scores = [0.7, 0.4]
    assert third.known_scores() == [0.7, 0.4]
    third.path_scores = [0.7, 0.4, 0.9]
    assert third.known_scores() == [0.7, 0.4]  # its own scores are not "known" to the job that scores it
