"""The warm start's preference-following demonstrator: which expert each preference picks from what
the system prompt lists (no Ray)."""

from __future__ import annotations

import collections
import math
import pickle
import random

import pytest

from orchestra_ray.rollout.chat import SlotCard
from orchestra_ray.families.demos import listed_choice, listed_scores
from orchestra_ray.grpo.preferences import profile_vector

# The quickstart zoo's listing: price per million input / output tokens, typical latency.
CARDS = [
    SlotCard("claude-sonnet-4", "strongest", 3.0, 15.0, 30.0),
    SlotCard("gpt-5-mini", "moderate", 0.25, 2.0, 7.0),
    SlotCard("grok-3-mini", "cheap", 0.3, 0.5, 8.0),
    SlotCard("qwen3-8b", "cheapest and fastest", 0.05, 0.2, 0.4),
]
SLOTS = [c.name for c in CARDS]


class OneTokenChat:
    """One token per call or observation: the shape of a demonstrated episode is what is checked."""

    def prompt_ids(self, system, user):
        return [0]

    def encode(self, text):
        return [1]

    def observation_ids(self, text):
        return [2]


def choice(profile: str, cards=CARDS) -> str:
    return listed_choice(cards, "claude-sonnet-4", profile_vector(profile, [c.name for c in cards]).weights)


@pytest.mark.parametrize(
    "profile,expert",
    [
        ("accuracy-first", "claude-sonnet-4"),  # outcome only: the strongest
        ("cost-first", "qwen3-8b"),  # lowest listed price
        ("latency-first", "qwen3-8b"),  # lowest typical latency
        ("balanced", "qwen3-8b"),  # cost + latency outweigh the strongest's outcome third
        ("prefer:grok-3-mini", "grok-3-mini"),
        ("avoid:qwen3-8b", "claude-sonnet-4"),  # its outcome 0.2 beats the others' cost + latency 0.2 less their spread
    ],
)
def test_each_profile_picks_what_its_weights_favour_in_the_listing(profile, expert):
    assert choice(profile) == expert


def test_the_choice_follows_the_listing_not_the_slot_order():
    # Make grok the fastest and cheapest: the cost- and latency-first choices move with it.
    cards = [c if c.name != "grok-3-mini" else SlotCard("grok-3-mini", "", 0.01, 0.05, 0.1) for c in CARDS]
    assert choice("cost-first", cards) == "grok-3-mini"
    assert choice("latency-first", cards) == "grok-3-mini"
    assert choice("accuracy-first", cards) == "claude-sonnet-4"


def test_identical_listings_tie_to_the_earlier_slot():
    cards = [SlotCard("a", "", 1.0, 1.0, 1.0), SlotCard("b", "", 1.0, 1.0, 1.0)]
    assert listed_choice(cards, "b", {"cost": 1.0}) == "a"  # all equal on cost
    assert listed_choice(cards, "b", {"outcome": 1.0}) == "b"  # the strongest wins on outcome


def test_a_temperature_draws_experts_by_softmax_of_their_listed_scores():
    weights = profile_vector("cost-first", SLOTS).weights
    scores = listed_scores(CARDS, "claude-sonnet-4", weights)
    odds = [math.exp(s / 0.1) for s in scores]
    expected = {c.name: o / sum(odds) for c, o in zip(CARDS, odds)}
    rng = random.Random(0)
    n = 20000
    drawn = collections.Counter(listed_choice(CARDS, "claude-sonnet-4", weights, 0.1, rng) for _ in range(n))
    for name, p in expected.items():
        assert abs(drawn[name] / n - p) < 0.015, (name, drawn[name] / n, p)
    # The cheap experts share the draws; the priciest is all but never demonstrated for cost-first.
    assert drawn["qwen3-8b"] > drawn["grok-3-mini"] > drawn["gpt-5-mini"] > drawn["claude-sonnet-4"]
    # Accuracy-first has one clear best: the temperature hardly moves it.
    acc = profile_vector("accuracy-first", SLOTS).weights
    assert sum(listed_choice(CARDS, "claude-sonnet-4", acc, 0.1, rng) == "claude-sonnet-4" for _ in range(1000)) > 990


def test_the_same_seed_draws_the_same_demonstrations():
    weights = profile_vector("balanced", SLOTS).weights
    a = [listed_choice(CARDS, "claude-sonnet-4", weights, 0.1, r) for r in [random.Random(7)] for _ in range(50)]
    b = [listed_choice(CARDS, "claude-sonnet-4", weights, 0.1, r) for r in [random.Random(7)] for _ in range(50)]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("text, unknown", [
    ("Answer: I don't know", True), ("Answer:  \nI don’t know.", True),
    ("...\n\nAnswer: I don't have enough specific information to definitively identify the painting.", True),
    ("I don’t have browsing enabled here — may I look this up on the web?", True),
    ("Answer: Jane Ballou", False), ("He did not know the answer then, but later ... Answer: Paris", False),
])
def test_an_answer_that_says_the_expert_does_not_know_is_told_from_an_answer(text, unknown):
    from orchestra_ray.families.demos import says_unknown

    assert says_unknown(text) is unknown


def test_the_cascade_demonstrator_escalates_only_after_reading_an_abstention():
    from orchestra_ray.families.demos import cascade, cascade_order, scripted_demo

    order = cascade_order(CARDS, "claude-sonnet-4", profile_vector("accuracy-first", SLOTS).weights)
    assert order[0] == "claude-sonnet-4" and sorted(order) == sorted(SLOTS)
    cost = cascade_order(CARDS, "claude-sonnet-4", profile_vector("cost-first", SLOTS).weights)
    assert cost[0] == "qwen3-8b"
    for replies, asked in (({"qwen3-8b": "Answer: 42"}, ["qwen3-8b"]),
                           ({"qwen3-8b": "I don't know", "grok-3-mini": "Answer: 42"}, ["qwen3-8b", "grok-3-mini"]),
                           ({}, cost[:3])):  # nobody knows: three calls, the third relayed
        seen = []

        def observe(name, args):
            seen.append(args["expert"])
            return replies.get(args["expert"], "I don't know")

        demo = scripted_demo(OneTokenChat(), "s", "u", cascade(cost, 3), observe)
        assert seen == asked
        assert demo["token_ids"] == [0] + [1, 2] * len(asked) + [1]  # calls, their observations, the answer
    rng = random.Random(0)
    drawn = {tuple(cascade_order(CARDS, "claude-sonnet-4", profile_vector("balanced", SLOTS).weights, 0.3, rng))
             for _ in range(50)}
    assert len(drawn) > 3 and all(sorted(d) == sorted(SLOTS) for d in drawn)


def test_the_best_cascade_demonstrator_asks_in_each_preferences_best_training_order():
    """A cheap expert right on half the questions that says "I don't know" on a quarter, a mid one
    right on 60 %, a strong pricey one right on 80 %: cost-first's best training order starts
    cheap and escalates, an outcome-only preference's starts strong; each demonstration asks the
    next expert only after reading an abstention."""
    from orchestra_ray.families.demos import scripted_demo
    from orchestra_ray.families.frames import FramesFamily
    from orchestra_ray.families.task import Task
    from orchestra_ray.grpo.preferences import PreferenceVector
    from orchestra_ray.reports.baselines import Answer, best_cascade

    slots = ["strong", "mid", "cheap"]
    cards = [SlotCard("strong", "", 3.0, 15.0, 30.0), SlotCard("mid", "", 0.25, 2.0, 18.0), SlotCard("cheap", "", 0.3, 0.5, 7.0)]
    price = {"strong": 0.02, "mid": 0.002, "cheap": 0.0004}
    latency = {"strong": 30.0, "mid": 18.0, "cheap": 7.0}

    def answer(slot, grade):
        return Answer("I don't know" if grade == "C" else "Answer: x", grade, 100, 10, price[slot], latency[slot])

    training = {f"q{i}": {"strong": answer("strong", "A" if i % 10 < 8 else "B"),
                          "mid": answer("mid", "A" if i % 10 < 6 else "B"),
                          "cheap": answer("cheap", "AACB"[i % 4])} for i in range(40)}
    family = FramesFamily("system", [], "strong", "best-cascade", cards, 0.0, lambda: training)
    outcome_only = {"outcome": 1.0, "cost": 0.0, "latency": 0.0}

    def asked(weights, replies):
        seen = []

        def observe(name, args):
            seen.append(args["expert"])
            return replies.get(args["expert"], "I don't know")

        task = Task("t", "q", "question", "x", PreferenceVector("p", weights, ""))
        scripted_demo(OneTokenChat(), "s", "u", family.demonstration(task, random.Random(0)), observe)
        return seen

    cost = dict(profile_vector("cost-first", slots).weights)
    assert family.best_order(cost) == best_cascade(training, list(training), slots, cost)
    assert family.best_order(cost)[:2] == ("cheap", "mid")
    assert family.best_order(outcome_only)[0] == "strong"
    assert asked(cost, {"cheap": "Answer: 42"}) == ["cheap"]
    assert asked(cost, {"mid": "Answer: 42"}) == ["cheap", "mid"]
    assert asked(outcome_only, {"strong": "Answer: 42"}) == ["strong"]
    copy = pickle.loads(pickle.dumps(family))  # what a rollout worker gets: the orders, not the answers
    assert copy.training is None and copy.answers is None and copy.best_order(cost) == family.best_order(cost)
    with pytest.raises(ValueError, match="without the training split"):
        copy.best_order(outcome_only | {"latency": 0.5})
    with pytest.raises(ValueError, match="training split"):
        FramesFamily("system", [], "strong", "best-cascade", cards)
    with pytest.raises(ValueError, match="training split is empty"):
        FramesFamily("system", [], "strong", "best-cascade", cards, 0.0, dict).best_order(cost)


def test_multi_call_demonstrations_are_supplemented_per_profile_up_to_the_share():
    from pipelines.warm_start import calls_of, multi_call_supplement

    def demo(calls):  # prompt, then each call followed by an observation but the last
        mask = [0]
        for k in range(calls):
            mask += [1, 1] + ([0] if k < calls - 1 else [])
        return {"token_ids": [0] * len(mask), "loss_mask": mask}

    assert [calls_of(demo(n)) for n in (1, 2, 3)] == [1, 2, 3]
    drawn = [("cheap", demo(3))] * 4 + [("cheap", demo(2))] * 6 + [("strong", demo(2))] * 10
    # candidates: tasks whose demonstration calls once or twice before answering, by profile
    candidates = [(p, n) for p in ("strong", "cheap", "other") for n in (2, 3, 2, 3, 3, 3, 3, 3)]
    made = []

    def demonstrate(n):
        made.append(n)
        return demo(n)

    added = multi_call_supplement(drawn, candidates, demonstrate, 0.3)
    # cheap already has 4 of 10; strong needs 5 (5 of 15 = 1/3 >= 0.3); no profile of its own for "other"
    assert [p for p, _ in added] == ["strong"] * 5 and all(calls_of(d) == 3 for _, d in added)
    assert len(made) == 7  # strong's candidates until its share was met, none of the others'
