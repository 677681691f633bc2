"""Routing baselines over the zoo's recorded answers, as trajectories in the policy's own format.

Each baseline answers a question by consulting experts in a fixed way and relaying the last answer:
a single arm ("always ask X"), a random arm, the cheapest and the strongest arm (both picked on the
training split), the best fixed cascade (ask A; if A abstains, ask B; then C; the cascade is chosen
on the training split for each preference profile) and the oracle (the cheapest correct arm of each
question: the ceiling no router can pass). Their records carry the same metrics and tool calls as a
policy's rollout, so one report computes every figure the same way.

`answers[question_id][slot]` is an `Answer` (the recorded grade, tokens, cost and latency).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric
from orchestra_ray.grpo.reward import anchored_reward

ABSTAINED = "C"  # FRAMES grading: A correct, B incorrect, C not attempted


@dataclass(frozen=True)
class Answer:
    text: str
    grade: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency: float

    @property
    def correct(self) -> bool:
        return self.grade == "A"


Answers = Mapping[str, Mapping[str, Answer]]  # question_id -> slot -> answer


def arm_metrics(slots: Sequence[str], asked: Sequence[Tuple[str, Answer]], final: Answer) -> Dict[str, float]:
    m = {calls_metric(s): 0.0 for s in slots}
    for slot, _ in asked:
        m[calls_metric(slot)] += 1.0
    m[OUTCOME] = 1.0 if final.correct else 0.0
    m[COST] = sum(a.cost for _, a in asked)
    m[LATENCY] = sum(a.latency for _, a in asked)
    return m


def routed_record(question_id: str, slots: Sequence[str], asked: Sequence[Tuple[str, Answer]],
                  profile: str, preference: Mapping[str, float]) -> dict:
    """A trajectory record of "consult these experts in order, relay the last one's answer"."""
    calls = []
    for turn, (slot, a) in enumerate(asked):
        calls.append(_call(turn, "call_expert", slot, a.input_tokens, a.output_tokens, a.cost, a.latency))
    last_slot, final = asked[-1]
    calls.append(_call(len(asked), "answer", last_slot, 0, 0, 0.0, 0.0))
    task_id = f"eval-{profile}-{question_id}"
    return {
        "task_id": task_id, "question_id": question_id, "sample": 0, "episode_id": f"{task_id}#0",
        "family": "frames", "toolset": "frames", "weight_version": -1,
        "token_ids": [], "loss_mask": [], "rollout_logprobs": [], "prompt_len": 0,
        "turns": len(asked) + 1, "finish_reason": "answer", "tool_calls": calls, "format_errors": [],
        "final_answer": final.text, "answer_source": last_slot, "outcome": final.correct,
        "metrics": arm_metrics(slots, asked, final),
        "preference_profile": profile, "preference": dict(preference),
    }


def _call(turn: int, name: str, slot: str, tin: int, tout: int, cost: float, latency: float) -> dict:
    return {"turn": turn, "name": name, "arguments": json.dumps({"expert": slot}), "expert": slot,
            "input_tokens": tin, "output_tokens": tout, "cost": cost, "latency": latency,
            "ok": True, "error": "", "error_kind": ""}


def escalating(order: Sequence[str], answers: Mapping[str, Answer], stop: Callable[[Answer], bool]) -> List[Tuple[str, Answer]]:
    """Ask down `order` until `stop` accepts an answer (or the order ends)."""
    asked = []
    for slot in order:
        asked.append((slot, answers[slot]))
        if stop(answers[slot]):
            break
    return asked


def cascade_asked(order: Sequence[str], answers: Mapping[str, Answer]) -> List[Tuple[str, Answer]]:
    """Ask down the cascade until an expert does not abstain (or the cascade ends)."""
    return escalating(order, answers, lambda a: a.grade != ABSTAINED)


def oracle_slot(answers: Mapping[str, Answer], slots: Sequence[str]) -> str:
    """The cheapest correct arm; the cheapest arm when none is correct."""
    correct = [s for s in slots if answers[s].correct]
    return min(correct or slots, key=lambda s: (answers[s].cost, slots.index(s)))


def cheapest_slot(answers: Answers, question_ids: Sequence[str], slots: Sequence[str]) -> str:
    return min(slots, key=lambda s: (sum(answers[q][s].cost for q in question_ids), slots.index(s)))


def strongest_slot(answers: Answers, question_ids: Sequence[str], slots: Sequence[str]) -> str:
    return max(slots, key=lambda s: (sum(answers[q][s].correct for q in question_ids), -slots.index(s)))


def anchors_of(answers: Mapping[str, Answer], slots: Sequence[str]) -> List[Dict[str, float]]:
    """The single-arm metrics of one question: the fixed reference every evaluated sample is
    normalised against (orchestra_ray.reports.evaluation)."""
    return [arm_metrics(slots, [(s, answers[s])], answers[s]) for s in slots]


def best_cascade(answers: Answers, question_ids: Sequence[str], slots: Sequence[str],
                 preference: Mapping[str, float], max_length: int = 3) -> Tuple[str, ...]:
    """The ordered cascade of up to `max_length` distinct arms with the highest mean anchored
    reward under `preference` on `question_ids` (the training split)."""
    if not question_ids:
        raise ValueError("best_cascade needs at least one training question")
    anchors = {q: anchors_of(answers[q], slots) for q in question_ids}
    best, best_value = None, float("-inf")
    for n in range(1, min(max_length, len(slots)) + 1):
        for order in itertools.permutations(slots, n):
            value = 0.0
            for q in question_ids:
                asked = cascade_asked(order, answers[q])
                value += anchored_reward(arm_metrics(slots, asked, asked[-1][1]), anchors[q], preference)
            if value > best_value + 1e-12:
                best, best_value = order, value
    return best


@dataclass(frozen=True)
class BaselinePlan:
    """What each named baseline does, fixed on the training split before any held-out question is seen."""

    cheapest: str
    strongest: str
    cascades: Dict[str, Tuple[str, ...]]  # profile -> cascade order


def plan_baselines(answers: Answers, train_ids: Sequence[str], slots: Sequence[str],
                   profiles: Mapping[str, Mapping[str, float]]) -> BaselinePlan:
    return BaselinePlan(
        cheapest=cheapest_slot(answers, train_ids, slots),
        strongest=strongest_slot(answers, train_ids, slots),
        cascades={p: best_cascade(answers, train_ids, slots, w) for p, w in profiles.items()},
    )


def baseline_records(answers: Answers, question_ids: Sequence[str], slots: Sequence[str],
                     profiles: Mapping[str, Mapping[str, float]], plan: BaselinePlan, seed: int,
                     router_choices: Optional[Mapping[Tuple[str, str], str]] = None) -> Dict[str, List[dict]]:
    """method -> records, one per (profile, held-out question). `router_choices` maps
    (profile, question_id) to the slot a learned router picked."""
    rng = random.Random(f"{seed}-random-arm")
    random_pick = {q: rng.choice(list(slots)) for q in question_ids}
    out: Dict[str, List[dict]] = {}

    def add(method: str, profile: str, q: str, asked: List[Tuple[str, Answer]]) -> None:
        out.setdefault(method, []).append(routed_record(q, slots, asked, profile, profiles[profile]))

    for profile in profiles:
        for q in question_ids:
            a = answers[q]
            for s in slots:
                add(f"arm:{s}", profile, q, [(s, a[s])])
            add("random", profile, q, [(random_pick[q], a[random_pick[q]])])
            add("cheapest", profile, q, [(plan.cheapest, a[plan.cheapest])])
            add("strongest", profile, q, [(plan.strongest, a[plan.strongest])])
            add("cascade", profile, q, cascade_asked(plan.cascades[profile], a))
            best = oracle_slot(a, slots)
            add("oracle", profile, q, [(best, a[best])])
            if router_choices is not None:
                s = router_choices[(profile, q)]
                add("router", profile, q, [(s, a[s])])
    return out
