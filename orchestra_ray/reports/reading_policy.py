"""The best policy that decides from what the experts say, never from the question: a decision tree
over the zoo's recorded answers.

Such a policy asks an expert, reads its answer, and either relays one of the answers it has read
or asks another expert; all it knows of a question is what each answer said. Here an answer says
one of: the expert does not know (`says_unknown`, on what the policy is shown), it gives the
same answer as an expert read before ("agrees:<slot>", compared on the normalised text after its
last "Answer:"), or it gives another answer. `best_reading_policy` finds, by dynamic programming
over every history of up to `max_calls` calls, the tree with the highest total anchored reward on a
set of questions: fitted on the training split it is a policy one could deploy; fitted on the
held-out questions themselves (hindsight) it bounds what a policy that reads these signals in up to
`max_calls` calls can reach there. A cascade that escalates when what it is shown says "I don't
know" is one such tree; the report's cascade baseline is not, as it escalates on the recorded grade
("not attempted"), which marks some answers that do not say so. `accuracy_cost_frontier` gives the
corners of what such trees trade between accuracy and cost.

Plain data in and out: `answers[question_id][slot]` is a `baselines.Answer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from orchestra_ray.families.demos import says_unknown
from orchestra_ray.grpo.reward import anchored_reward
from orchestra_ray.reports.baselines import Answer, Answers, anchors_of, arm_metrics
from orchestra_ray.rollout.expert_view import expert_view

UNKNOWN, ANSWERED = "unknown", "answer"
# Dollars one correct answer is worth, for the frontier's corners (a FRAMES question costs $0.00001
# to $0.03 an expert; at the highest prices the cheapest expert alone is the best).
FRONTIER_PRICES = (0.0, 0.1, 0.3, 1, 2, 3, 5, 7, 10, 20, 50, 100, 300, 1000, 3000)
Asked = List[Tuple[str, Answer]]


@dataclass(frozen=True)
class ReadingPolicy:
    """Relay `relay`'s answer, or (relay None) ask `ask` and go on with `then[what it said]`; a
    signal the tree never met on its questions relays the expert just asked."""

    relay: Optional[str] = None
    ask: Optional[str] = None
    then: Mapping[str, "ReadingPolicy"] = field(default_factory=dict)


def final_answer(text: str) -> str:
    """What an answer says, for comparing two: lower-case letters and digits after its last
    "Answer:", at most 40 of them; "" (agreeing with nothing) without one, as the opening words of
    two reasoned answers ("Looking at this question...") say nothing of what they concluded."""
    low = text.lower()
    if "answer:" not in low:
        return ""
    return re.sub(r"[^a-z0-9]", "", low.rsplit("answer:", 1)[-1])[:40]


@lru_cache(maxsize=16384)
def _read(text: str, seen_chars: int) -> Tuple[bool, str]:
    """(says it does not know, its final answer) of what the policy is shown of `text`: once per
    answer, however often the search over trees reads it."""
    shown = expert_view(text, seen_chars)
    return says_unknown(shown), final_answer(shown)


def signal(answer: Answer, earlier: Asked, seen_chars: int) -> str:
    """What reading `answer` (what the policy is shown of it: `expert_view`) tells a policy that has
    already read `earlier`."""
    unknown, said = _read(answer.text, seen_chars)
    if unknown:
        return UNKNOWN
    for slot, a in earlier:
        if said and _read(a.text, seen_chars) == (False, said):
            return f"agrees:{slot}"
    return ANSWERED


def follow(policy: ReadingPolicy, answers: Mapping[str, Answer], seen_chars: int) -> Asked:
    """The experts `policy` asks on one question, in order, the one whose answer it relays last
    (moved there if it was asked earlier: the metrics do not depend on the order)."""
    asked: Asked = []
    node = policy
    while node.relay is None:
        said = signal(answers[node.ask], asked, seen_chars)
        asked.append((node.ask, answers[node.ask]))
        node = node.then.get(said) or ReadingPolicy(relay=node.ask)
    final = next(i for i, (s, _) in enumerate(asked) if s == node.relay)
    return asked[:final] + asked[final + 1:] + [asked[final]]


Score = Callable[[str, Asked, str], float]  # (question id, experts asked, the one relayed) -> score


def best_reading_policy(answers: Answers, question_ids: Sequence[str], slots: Sequence[str],
                        weights: Mapping[str, float], seen_chars: int, max_calls: int = 3) -> ReadingPolicy:
    """The tree of at most `max_calls` calls with the highest total anchored reward under `weights`
    on `question_ids`; of trees with as much reward, the one that spends least (then the first found:
    fewer calls, `slots` order)."""
    if not question_ids:
        raise ValueError("best_reading_policy needs at least one question")
    anchors = {q: anchors_of(answers[q], slots) for q in question_ids}

    def reward(q: str, asked: Asked, relay: str) -> float:
        return anchored_reward(arm_metrics(slots, asked, answers[q][relay]), anchors[q], weights)

    return _best_tree(answers, question_ids, slots, reward, seen_chars, max_calls)


def accuracy_cost_frontier(answers: Answers, question_ids: Sequence[str], slots: Sequence[str], seen_chars: int,
                           max_calls: int = 3, prices: Sequence[float] = FRONTIER_PRICES) -> List[Tuple[float, float, ReadingPolicy]]:
    """(accuracy, mean cost per question, tree) of the trees that maximise the number of correct
    answers less `price` x the dollars spent: the corners of the accuracy-cost frontier of reading
    policies on `question_ids`, cheapest first. The prices of `prices` find most corners; then, for
    two neighbouring corners, the price at which both score alike finds any corner between them,
    until none is left, so a policy more accurate than one corner and less than the next costs at
    least the straight line between them."""
    if not question_ids:
        raise ValueError("accuracy_cost_frontier needs at least one question")
    n = len(question_ids)
    corners: Dict[Tuple[float, float], ReadingPolicy] = {}

    def corner(price: float) -> Tuple[float, float]:
        def score(q: str, asked: Asked, relay: str) -> float:
            return float(answers[q][relay].correct) - price * sum(a.cost for _, a in asked)

        tree = _best_tree(answers, question_ids, slots, score, seen_chars, max_calls)
        routes = [follow(tree, answers[q], seen_chars) for q in question_ids]
        point = (sum(r[-1][1].correct for r in routes) / n, sum(a.cost for r in routes for _, a in r) / n)
        corners.setdefault(point, tree)
        return point

    for price in prices:
        corner(price)
    checked = set()
    while True:
        points = sorted(corners, key=lambda p: (p[1], p[0]))
        gaps = [(a, b) for a, b in zip(points, points[1:]) if b[0] > a[0] and b[1] > a[1] and (a, b) not in checked]
        if not gaps:
            break
        a, b = gaps[0]
        checked.add((a, b))
        corner((b[0] - a[0]) / (b[1] - a[1]))
    return sorted(((acc, cost, tree) for (acc, cost), tree in corners.items()), key=lambda c: (c[1], c[0]))


def _best_tree(answers: Answers, question_ids: Sequence[str], slots: Sequence[str], score: Score, seen_chars: int,
               max_calls: int) -> ReadingPolicy:
    """Dynamic programming over every history of calls and what each said: the tree with the highest
    total `score`; of trees that score as much, the one that spends least."""
    if max_calls < 1 or not slots:
        raise ValueError(f"a reading policy needs at least one call and one expert, got {max_calls} and {list(slots)}")

    def solve(ids: List[str], asked_slots: Tuple[str, ...]) -> Tuple[float, float, ReadingPolicy]:
        """(total score, total cost, tree) of the best tree from here for `ids`."""
        best: Tuple[float, float, ReadingPolicy] = (float("-inf"), 0.0, ReadingPolicy())

        def better(value: float, cost: float) -> bool:  # more score; as much for less cost
            return value > best[0] + 1e-12 or (value > best[0] - 1e-12 and cost < best[1] - 1e-12)

        spent = sum(answers[q][s].cost for q in ids for s in asked_slots)
        for k in asked_slots:
            value = sum(score(q, [(s, answers[q][s]) for s in asked_slots], k) for q in ids)
            if better(value, spent):
                best = (value, spent, ReadingPolicy(relay=k))
        if len(asked_slots) >= max_calls:
            return best
        for e in slots:
            if e in asked_slots:
                continue
            groups: Dict[str, List[str]] = {}
            for q in ids:
                said = signal(answers[q][e], [(s, answers[q][s]) for s in asked_slots], seen_chars)
                groups.setdefault(said, []).append(q)
            value, cost, then = 0.0, 0.0, {}
            for said, g in groups.items():
                v, c, then[said] = solve(g, asked_slots + (e,))
                value, cost = value + v, cost + c
            if better(value, cost):
                best = (value, cost, ReadingPolicy(ask=e, then=then))
        return best

    return solve(list(question_ids), ())[2]


def describe(policy: ReadingPolicy) -> str:
    """One line: `a {unknown: b {...}}`; a branch that relays the expert just asked is left out."""
    if policy.relay is not None:
        return f"relay {policy.relay}"
    branches = [f"{said}: {describe(p)}" for said, p in sorted(policy.then.items())
                if not (p.relay == policy.ask)]
    return policy.ask + (f" {{{'; '.join(branches)}}}" if branches else "")
