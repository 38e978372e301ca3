"""The tolerant reply parser of ``research.annotate``: JSON strictly, fenced or embedded; reasons otherwise."""

from __future__ import annotations

import json

import pytest

from research.annotate.parse import Node, Unusable, parse_node, parse_path, parse_plain_step


def node(**fields: object) -> str:
    base = {"previous_stage": "none", "current_state": "start", "action": "continue", "content": "Bar A is 3.",
            "answer": None}  # fmt: skip
    return json.dumps({**base, **fields})


def test_a_strict_json_node() -> None:
    parsed = parse_node(node())
    assert parsed == Node("Bar A is 3.", "continue", "none", "start", None)
    assert parsed.next_action == "continue"


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + node() + "\n```",
        "Sure! Here it is:\n" + node() + "\nAnything else?",
        "```\n" + node() + "```",
    ],
)
def test_json_inside_prose_or_fences(text: str) -> None:
    assert isinstance(parse_node(text), Node)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_reply"),
        ("   \n", "empty_reply"),
        ("I think the answer is probably 5", "not_json"),
        ("{not json at all", "not_json"),
        ("[1, 2, 3]", "not_an_object"),
        (json.dumps({"action": "continue"}), "missing_content"),
        (node(action="ponder"), "bad_action"),
        (node(content=""), "missing_content"),
        (node(content="Step 1 step 2 step 3 step 4"), "invalid_step:several_steps_in_one"),
        (node(action="conclude", content="Therefore we are done."), "conclude_without_answer"),
    ],
)
def test_unusable_replies_get_a_reason(text: str, reason: str) -> None:
    parsed = parse_node(text)
    assert isinstance(parsed, Unusable)
    assert parsed.reason == reason


def test_actions_and_conclusions() -> None:
    done = parse_node(node(action="final_answer", content="To sum up, the final answer is: 12"))
    assert isinstance(done, Node) and done.action == "conclude" and done.answer == "12"
    assert done.next_action == "final_answer"
    # a step that states the final answer concludes whatever action was named
    stated = parse_node(node(action="continue", content="To sum up, the final answer is: (B)"), choices=["3", "4"])
    assert isinstance(stated, Node) and stated.action == "conclude" and stated.answer == "B"
    check = parse_node(node(action="Verify", content="Check: 3 + 4 = 7 holds."))
    assert isinstance(check, Node) and check.action == "verify" and check.next_action == "continue"
    copy = parse_node(node(content="Bar A is 3."), previous="Bar A is 3.")
    assert isinstance(copy, Unusable) and copy.reason == "invalid_step:near_copy_of_the_previous_step"


def test_plain_text_steps_of_a_step_preset() -> None:
    assert parse_plain_step("Bar A is 3.") == Node("Bar A is 3.", "continue")
    final = parse_plain_step("To sum up, the final answer is: 7")
    assert isinstance(final, Node) and final.action == "conclude" and final.answer == "7"
    assert isinstance(parse_plain_step(""), Unusable)


def test_atomized_paths() -> None:
    text = json.dumps(
        {
            "steps": [
                {"content": "Bar A is 3.", "action": "continue"},
                "Bar B is 4.",
                {"content": "3 + 4 = 7", "action": "continue"},
                {"content": "To sum up, the final answer is: 7", "action": "conclude"},
            ],
            "answer": "7",
        }
    )
    nodes = parse_path(text)
    assert isinstance(nodes, list) and len(nodes) == 4
    assert [n.next_action for n in nodes] == ["continue", "continue", "continue", "final_answer"]
    assert nodes[-1].answer == "7"
    early = json.dumps({"steps": [{"content": "The answer is 7", "action": "conclude"}, "More text here."],
                        "answer": "7"})  # fmt: skip
    assert isinstance(parse_path(early), Unusable)
    assert parse_path(json.dumps({"steps": []})) == Unusable("missing_steps", '{"steps": []}')


def test_whole_solutions_from_a_step_by_step_endpoint() -> None:
    from research.annotate.parse import parse_solution

    nodes = parse_solution("7", "Bar A is 3.\nBar B is 4.\n3 + 4 = 7\nTo sum up, the final answer is: 7")
    assert isinstance(nodes, list) and [n.next_action for n in nodes][-1] == "final_answer"
    assert nodes[-1].answer == "7" and len(nodes) == 4
    plain = parse_solution("Bar A is 3.\nTo sum up, the final answer is: 3", None)
    assert isinstance(plain, list) and plain[-1].answer == "3"
    assert parse_solution("", "") == Unusable("empty_reply", "")
    assert isinstance(parse_solution("I do not know", None), Unusable)
