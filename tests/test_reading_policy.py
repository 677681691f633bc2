"""What the policy is shown of an expert's answer (`rollout/expert_view.py`), and the best policy
that decides from what it reads (`reports/reading_policy.py`), on answers built here (no Ray)."""

import itertools
import random

import pytest

from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.grpo.reward import anchored_reward
from orchestra_ray.families.demos import says_unknown
from orchestra_ray.reports.baselines import Answer, anchors_of, arm_metrics, escalating
from orchestra_ray.reports.reading_policy import (ReadingPolicy, accuracy_cost_frontier, best_reading_policy, describe, follow,
                                                  signal)
from orchestra_ray.rollout.expert_view import expert_view

SLOTS = ["cheap", "mid", "strong"]
PRICE = {"cheap": 0.001, "mid": 0.01, "strong": 0.1}


def test_a_long_answer_is_shown_by_its_start_and_its_end():
    text = "Looking at this question, I need to " + "reason " * 80 + "so I don't know."
    shown = expert_view(text, 120)
    assert len(shown) == 120 and shown.startswith("Looking at") and shown.endswith("so I don't know.")
    assert expert_view("Answer: Paris", 120) == "Answer: Paris"
    assert expert_view(text, 4) == text[:4]  # no room for a start, an ellipsis and an end


def answer(slot, what):
    """`what`: "right", "wrong:<text>" or "unknown"; a long unknown ends past the shown start."""
    if what == "unknown":
        text, grade = "Looking at the sources, " + "hm " * 200 + "I don't know.", "C"
    else:
        text, grade = "Answer: " + ("gold" if what == "right" else what.split(":")[1]), "A" if what == "right" else "B"
    return Answer(text, grade, 100, 50, PRICE[slot], 1.0)


def test_the_best_reading_policy_escalates_on_what_it_reads():
    # cheap knows half the questions and says so at the end of a long answer otherwise; strong knows all
    answers = {f"q{i}": {"cheap": answer("cheap", "right" if i % 2 else "unknown"), "mid": answer("mid", "wrong:x"),
                         "strong": answer("strong", "right")} for i in range(10)}
    w = dict(profile_vector("cost-first", SLOTS).weights)
    tree = best_reading_policy(answers, list(answers), SLOTS, w, seen_chars=300)
    assert tree == ReadingPolicy(ask="cheap", then={"answer": ReadingPolicy(relay="cheap"), "unknown": ReadingPolicy(
        ask="strong", then={"answer": ReadingPolicy(relay="strong")})})
    assert describe(tree) == "cheap {unknown: strong}"
    assert [s for s, _ in follow(tree, answers["q0"], 300)] == ["cheap", "strong"]
    assert [s for s, _ in follow(tree, answers["q1"], 300)] == ["cheap"]
    with pytest.raises(ValueError, match="at least one question"):
        best_reading_policy(answers, [], SLOTS, w, 300)


def test_signals_read_abstention_at_the_end_and_agreement():
    earlier = [("cheap", answer("cheap", "wrong:Lyon")), ("mid", answer("mid", "unknown"))]
    assert signal(answer("strong", "unknown"), [], 40) == "unknown"  # its end is shown, however short the view
    assert signal(answer("strong", "wrong:lyon."), earlier, 300) == "agrees:cheap"  # case and punctuation aside
    assert signal(answer("strong", "right"), earlier, 300) == "answer"


def test_the_tree_gets_at_least_every_reading_cascade_on_its_own_questions():
    """A cascade that escalates on what it is shown is a reading policy, so the best tree on a set
    of questions is never below it; the grade is not read: "not attempted" on a text that answers
    reads as an answer."""
    rng = random.Random(3)
    answers = {f"q{i}": {s: answer(s, rng.choice(["right", "right", "unknown", f"wrong:{s}"])) for s in SLOTS}
               for i in range(40)}
    answers["q0"]["cheap"] = Answer("Answer: the president from the one that organizes it", "C", 100, 50, PRICE["cheap"], 1.0)
    assert signal(answers["q0"]["cheap"], [], 300) == "answer"
    reads = lambda o: lambda a: escalating(o, a, lambda x: not says_unknown(expert_view(x.text, 300)))  # noqa: E731
    for profile in ("balanced", "accuracy-first", "cost-first"):
        w = dict(profile_vector(profile, SLOTS).weights)
        tree = best_reading_policy(answers, list(answers), SLOTS, w, 300)
        cascades = [total_of(reads(o), answers, w) for n in (1, 2, 3) for o in itertools.permutations(SLOTS, n)]
        assert total_of(lambda a: follow(tree, a, 300), answers, w) >= max(cascades) - 1e-9
    with pytest.raises(ValueError, match="at least one call"):
        best_reading_policy(answers, list(answers), SLOTS, w, 300, max_calls=0)


def total_of(route, answers, w):
    out = 0.0
    for q, a in answers.items():
        asked = route(a)
        out += anchored_reward(arm_metrics(SLOTS, asked, asked[-1][1]), anchors_of(a, SLOTS), w)
    return out


def test_the_frontier_runs_from_the_cheapest_expert_to_the_most_accurate_reader():
    rng = random.Random(5)
    answers = {f"q{i}": {s: answer(s, rng.choice(["right", "unknown", f"wrong:{s}"])) for s in SLOTS} for i in range(30)}
    corners = accuracy_cost_frontier(answers, list(answers), SLOTS, 300)
    accuracies, costs = [c[0] for c in corners], [c[1] for c in corners]
    assert costs == sorted(costs) and accuracies == sorted(accuracies) and len(corners) >= 2
    assert describe(corners[0][2]) == "cheap" and costs[0] == pytest.approx(PRICE["cheap"])
    # the last corner is at least as accurate as any expert alone (each is a tree), and no reader
    # answers right where no expert did
    best_alone = max(sum(a[s].correct for a in answers.values()) for s in SLOTS) / 30
    any_right = sum(any(a[s].correct for s in SLOTS) for a in answers.values()) / 30
    assert best_alone <= accuracies[-1] <= any_right
    for acc, cost, tree in corners:
        routes = [follow(tree, a, 300) for a in answers.values()]
        assert acc == pytest.approx(sum(r[-1][1].correct for r in routes) / 30)
    # from the two ends alone, the prices at which neighbours tie find every corner between them
    coarse = accuracy_cost_frontier(answers, list(answers), SLOTS, 300, prices=(0.0, 1e6))
    assert [(a, c) for a, c, _ in coarse] == [(a, c) for a, c, _ in corners]
