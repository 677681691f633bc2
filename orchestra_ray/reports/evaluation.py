"""Held-out evaluation: rewards comparable across policies, and paired bootstrap intervals.

During training a sample's reward is normalised within its group. To compare two policies on the
same question, each evaluated sample is instead normalised against fixed anchors: the zoo's
single-expert trajectories on that question ("ask expert k, relay its answer"), one per slot.
Families without experts to anchor on (domain and arithmetic tasks) score P_outcome * outcome.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from orchestra_ray.experts.base import ExpertError, ExpertRequest
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric
from orchestra_ray.grpo.reward import anchored_reward
from orchestra_ray.rollout.sample import Sample


def anchor_metrics(question_id: str, question: str, experts: Mapping[str, object], slots: Sequence[str]) -> List[Dict[str, float]]:
    anchors = []
    for slot in slots:
        try:
            r = experts[slot].respond(ExpertRequest(question_id, [{"role": "user", "content": question}]))
        except ExpertError:
            continue
        m = {calls_metric(s): 0.0 for s in slots}
        m[calls_metric(slot)] = 1.0
        m.update({OUTCOME: 1.0 if r.grade == "A" else 0.0, COST: r.cost, LATENCY: r.latency})
        anchors.append(m)
    return anchors


def score_records(records: Sequence[Sample], anchors: Mapping[str, List[Dict[str, float]]]) -> List[Sample]:
    """Each evaluated sample (one per task) with its evaluation reward as `reward`."""
    out = []
    for r in records:
        if r.question_id in anchors:
            reward = anchored_reward(r.metrics, anchors[r.question_id], r.preference)
        else:
            reward = r.preference.get(OUTCOME, 0.0) * r.metrics[OUTCOME]
        out.append(replace(r, reward=reward))
    return out


def tool_share(episodes_calls: Iterable[Sequence[Mapping[str, Any]]]) -> Dict[str, float]:
    """Share of all tool calls (answers excluded) per tool, over the episodes' call lists; an expert
    call counts as its slot."""
    counts: Dict[str, float] = defaultdict(float)
    for calls in episodes_calls:
        for c in calls:
            if c["name"] != "answer" or c["input_tokens"] > 0:  # an unconsulted answer bills its expert
                counts[c["expert"] or c["name"]] += 1
    total = sum(counts.values()) or 1.0
    return {k: v / total for k, v in sorted(counts.items())}


def summarise_families(scored: Sequence[Sample]) -> Dict[str, Dict[str, float]]:
    """Per task family: reward (the evaluation's, or a training step's group-normalised one),
    accuracy (success rate), cost, latency and tool-call share."""
    groups: Dict[str, List[Sample]] = defaultdict(list)
    for r in scored:
        groups[r.family].append(r)
    return {name: {**_means(rows), "tool_share": tool_share(r.tool_calls for r in rows)} for name, rows in sorted(groups.items())}


def _means(rows: Sequence[Sample]) -> Dict[str, float]:
    n = len(rows)
    return {
        "n": n,
        "reward": sum(r.reward for r in rows) / n,
        "accuracy": sum(r.metrics[OUTCOME] for r in rows) / n,
        "cost": sum(r.metrics[COST] for r in rows) / n,
        "latency": sum(r.metrics[LATENCY] for r in rows) / n,
        "format_error_rate": sum(1 for r in rows if r.format_errors) / n,
    }


def summarise(scored: Sequence[Sample]) -> Dict[str, Dict[str, float]]:
    """Per profile and overall: mean reward, accuracy, cost, latency, format errors, expert shares."""
    groups: Dict[str, List[Sample]] = defaultdict(list)
    for r in scored:
        groups[r.preference_profile].append(r)
        groups["all"].append(r)
    out = {}
    for name, rows in groups.items():
        n = len(rows)
        calls: Dict[str, float] = defaultdict(float)
        for r in rows:
            for k, v in r.metrics.items():
                if k.startswith("calls:"):
                    calls[k[6:]] += v
        total_calls = sum(calls.values()) or 1.0
        out[name] = {
            **_means(rows),
            "answer_rate": sum(1 for r in rows if r.answer_source) / n,
            "call_share": {k: v / total_calls for k, v in sorted(calls.items())},
        }
    return out


def paired_bootstrap(
    before: Mapping[str, float], after: Mapping[str, float], samples: int = 2000, seed: int = 0, level: float = 0.95
) -> Tuple[float, float, float]:
    """Mean of (after - before) over shared keys and its percentile bootstrap interval."""
    keys = sorted(set(before) & set(after))
    if not keys:
        raise ValueError("no shared questions to compare")
    diffs = [after[k] - before[k] for k in keys]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    lo = means[int((1 - level) / 2 * samples)]
    hi = means[min(samples - 1, int((1 + level) / 2 * samples))]
    return sum(diffs) / n, lo, hi


def per_question_reward(scored: Sequence[Sample]) -> Dict[str, float]:
    """Mean eval reward per question over the evaluated profiles (the bootstrap's unit)."""
    acc: Dict[str, List[float]] = defaultdict(list)
    for r in scored:
        acc[r.question_id].append(r.reward)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def episode_outcomes(scored: Sequence[Sample]) -> Dict[str, Dict[str, float]]:
    """Per task family, each evaluated episode's outcome keyed by `question_id|profile`: what lines
    up the same episodes of two evaluations."""
    out: Dict[str, Dict[str, float]] = defaultdict(dict)
    for r in scored:
        out[r.family][f"{r.question_id}|{r.preference_profile}"] = float(r.metrics[OUTCOME])
    return dict(out)


def compare_outcomes(before: Mapping[str, float], after: Mapping[str, float], samples: int = 2000, seed: int = 0) -> Dict:
    """The success change between two evaluations of the same episodes: how many the later one
    solved and the earlier did not (gained) and the reverse (lost), and the mean change per task
    with its paired bootstrap interval over tasks (the profiles of one task are not independent)."""
    keys = sorted(set(before) & set(after))
    if not keys:
        raise ValueError("no shared episodes to compare")
    per_task: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    for k in keys:
        per_task[k.rsplit("|", 1)[0]].append((before[k], after[k]))
    mean_before = {t: sum(b for b, _ in v) / len(v) for t, v in per_task.items()}
    mean_after = {t: sum(a for _, a in v) / len(v) for t, v in per_task.items()}
    d, lo, hi = paired_bootstrap(mean_before, mean_after, samples, seed)
    return {"episodes": len(keys), "tasks": len(per_task), "gained": sum(after[k] > before[k] for k in keys),
            "lost": sum(after[k] < before[k] for k in keys), "mean": d, "ci95": [lo, hi]}
