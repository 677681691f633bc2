"""The orchestration reward of ToolOrchestra, with explicit metric directions.

R = 0 when the outcome is wrong; otherwise R = sum_k |P_k| * Mhat_k, where each metric is min-max
normalised over the group of samples of the same task into [0, 1], 1 always being the better end:
low cost and latency are better, a correct outcome is better, and for `calls:<slot>` more calls are
better when P_k > 0 (the user prefers that expert) and fewer when P_k < 0 (the user avoids it).
A metric constant within the group carries no information and contributes 0.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME

LOWER_IS_BETTER = {COST, LATENCY}


def _better_is_higher(metric: str, weight: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return False
    if metric == OUTCOME:
        return True
    return weight >= 0  # calls:<slot>


def normalised_metrics(
    group: Sequence[Mapping[str, float]], weights: Mapping[str, float]
) -> List[Dict[str, float]]:
    """Min-max normalise each weighted metric over the group, 1 = better end, constant -> 0."""
    out: List[Dict[str, float]] = [dict() for _ in group]
    for metric, w in weights.items():
        if w == 0:
            continue
        values = [float(m.get(metric, 0.0)) for m in group]
        lo, hi = min(values), max(values)
        for i, v in enumerate(values):
            if hi - lo <= 1e-12:
                out[i][metric] = 0.0
                continue
            x = (v - lo) / (hi - lo)
            out[i][metric] = x if _better_is_higher(metric, w) else 1.0 - x
    return out


def orchestration_reward(
    group: Sequence[Mapping[str, float]], weights: Mapping[str, float]
) -> List[float]:
    """Rewards of the samples of one task. Each metrics dict holds `outcome` (1 correct, 0 not),
    `cost`, `latency` and `calls:<slot>` counts; `weights` is the task's preference vector."""
    norm = normalised_metrics(group, weights)
    rewards = []
    for m, mh in zip(group, norm):
        if float(m.get(OUTCOME, 0.0)) <= 0.0:
            rewards.append(0.0)
            continue
        rewards.append(sum(abs(weights[k]) * v for k, v in mh.items()))
    return rewards


def anchored_reward(
    sample: Mapping[str, float], anchors: Sequence[Mapping[str, float]], weights: Mapping[str, float]
) -> float:
    """Reward of one sample normalised against fixed reference trajectories of the same task (for
    evaluation: the zoo's single-expert trajectories), so that figures compare across policies."""
    return orchestration_reward([sample, *anchors], weights)[0]
