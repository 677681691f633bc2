"""Task families without Ray: the mixed sampler's proportions and resumable position, numeric
judging, the arithmetic generator's gold answers, and the per-family evaluation summary."""

import pytest

from orchestra_ray.families.arithmetic import generate_arithmetic
from orchestra_ray.reports.evaluation import score_records, summarise_families, tool_share
from orchestra_ray.families.grading import judge_number
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, FRAMES, MixedTaskSampler, Problem
from orchestra_ray.rollout.sample import Sample

SLOTS = ["a", "b"]


def _pool(family, n):
    return [Problem(f"{family}-{i}", f"problem {i}", str(i), family, family) for i in range(n)]


def test_mixed_sampler_draws_each_family_in_proportion():
    pools = {FRAMES: _pool(FRAMES, 50), DOMAIN: _pool(DOMAIN, 30), ARITHMETIC: _pool(ARITHMETIC, 20)}
    s = MixedTaskSampler(pools, {FRAMES: 0.5, DOMAIN: 0.25, ARITHMETIC: 0.25}, ["balanced"], SLOTS, seed=0)
    tasks = s.next_tasks(16, step=1)
    by = {f: sum(t.family == f for t in tasks) for f in pools}
    assert by == {FRAMES: 8, DOMAIN: 4, ARITHMETIC: 4}
    assert len({t.task_id for t in tasks}) == 16
    assert all(t.toolset == t.family for t in tasks)
    # Largest remainder: 10 tasks over 0.5/0.25/0.25 is 5/3/2 or 5/2/3, never 4 or 6 frames.
    assert s.counts(10)[FRAMES] == 5 and sum(s.counts(10).values()) == 10


def test_mixed_sampler_resumes_each_family_in_place():
    pools = {FRAMES: _pool(FRAMES, 7), ARITHMETIC: _pool(ARITHMETIC, 5)}
    weights = {FRAMES: 1.0, ARITHMETIC: 1.0}
    a = MixedTaskSampler(pools, weights, ["balanced", "cost-first"], SLOTS, seed=3)
    a.next_tasks(6, 1)
    saved = a.position
    expected = [(t.question_id, t.preference.profile) for t in a.next_tasks(6, 2)]
    b = MixedTaskSampler(pools, weights, ["balanced", "cost-first"], SLOTS, seed=3)
    b.restore(saved)
    assert [(t.question_id, t.preference.profile) for t in b.next_tasks(6, 2)] == expected


def test_family_with_zero_weight_is_not_sampled():
    s = MixedTaskSampler({FRAMES: _pool(FRAMES, 5), DOMAIN: _pool(DOMAIN, 5)}, {FRAMES: 1.0, DOMAIN: 0.0}, ["balanced"], SLOTS, 0)
    assert {t.family for t in s.next_tasks(8, 1)} == {FRAMES}


@pytest.mark.parametrize(
    "answer, gold, ok",
    [("4812185", "4812185", True), ("The result is 4,812,185.", "4812185", True), ("-12", "-12", True),
     ("2.50", "2.5", True), ("41", "42", False), ("41 or 42", "42", False), ("forty-two", "42", False), ("", "0", False)],
)
def test_judge_number(answer, gold, ok):
    assert judge_number(answer, gold) is ok


def test_arithmetic_problems_are_distinct_deterministic_and_gold_is_the_programs_output():
    a, b = generate_arithmetic(60, seed=1), generate_arithmetic(60, seed=1)
    assert [p.problem for p in a] == [p.problem for p in b]
    assert len({p.problem.problem for p in a}) == 60
    assert generate_arithmetic(5, seed=2)[0].problem != a[0].problem
    for p in a:
        assert p.problem.family == ARITHMETIC and p.problem.answer.lstrip("-").isdigit()
    # Spot-check against Python itself, independently of the generator's evaluation.
    expr = next(p for p in a if p.problem.problem.startswith("Compute "))
    assert str(eval(expr.problem.problem[len("Compute "):-1])) == expr.problem.answer


def _record(family, qid, outcome, calls, cost=0.0):
    return Sample(family=family, question_id=qid, metrics={"outcome": float(outcome), "cost": cost, "latency": 0.1},
                  preference={"outcome": 0.5, "cost": 0.3, "latency": 0.2}, format_errors=[], tool_calls=calls)


def _call(name, expert="", input_tokens=0):
    return {"name": name, "expert": expert, "input_tokens": input_tokens}


def test_per_family_summary_and_tool_share():
    records = [
        _record(ARITHMETIC, "x1", True, [_call("run_python"), _call("answer")]),
        _record(ARITHMETIC, "x2", False, [_call("answer")]),
        _record(DOMAIN, "d1", True, [_call("get_reservation"), _call("cancel_reservation"), _call("answer")]),
    ]
    scored = score_records(records, anchors={})
    # No experts to anchor on: the evaluation reward is P_outcome * outcome.
    assert [r.reward for r in scored] == [0.5, 0.0, 0.5]
    fams = summarise_families(scored)
    assert fams[ARITHMETIC]["accuracy"] == 0.5 and fams[ARITHMETIC]["n"] == 2
    assert fams[ARITHMETIC]["tool_share"] == {"run_python": 1.0}
    assert fams[DOMAIN]["tool_share"] == {"cancel_reservation": 0.5, "get_reservation": 0.5}


def test_tool_share_counts_an_unconsulted_answer_as_its_expert_and_a_relay_as_nothing():
    rows = [{"tool_calls": [_call("call_expert", "a", 50), _call("answer", "a", 0)]},
            {"tool_calls": [_call("answer", "b", 50)]}]
    assert tool_share(r["tool_calls"] for r in rows) == {"a": 0.5, "b": 0.5}
