"""The figures of an evaluation report, computed from trajectory records (read back from Parquet).

Per preference profile and method (the policy and each baseline): accuracy with a 95% bootstrap
interval over questions, cost and latency per question, the anchored reward (each sample normalised
against the single-arm trajectories of its question, found among the `arm:<slot>` records) and the
share of tool calls per tool. Preference adherence compares, for each profile, the metric it asks
for with the same metric under the balanced profile.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from orchestra_ray.reports.evaluation import tool_share
from orchestra_ray.grpo.preferences import CALLS_PREFIX, COST, LATENCY, OUTCOME
from orchestra_ray.grpo.reward import anchored_reward

ARM_PREFIX = "arm:"
BALANCED = "balanced"


@dataclass
class Figures:
    method: str
    profile: str
    questions: int
    accuracy: float
    accuracy_ci: Tuple[float, float]
    cost: float
    latency: float
    reward: Optional[float]  # None where no single-arm anchors exist (families without experts)
    share: Dict[str, float] = field(default_factory=dict)


def bootstrap_interval(values: Sequence[float], samples: int, seed: int, level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling questions with replacement."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def anchors_by_question(records_by_method: Mapping[str, Sequence[dict]]) -> Dict[str, List[Dict[str, float]]]:
    """question_id -> the single-arm metrics, one per slot (from any profile: they do not depend on it)."""
    out: Dict[str, Dict[str, Dict[str, float]]] = defaultdict(dict)
    for method, rows in records_by_method.items():
        if method.startswith(ARM_PREFIX):
            for r in rows:
                out[r["question_id"]].setdefault(method, r["metrics"])
    return {q: [m for _, m in sorted(arms.items())] for q, arms in out.items()}


def method_figures(method: str, rows: Sequence[dict], anchors: Mapping[str, List[Dict[str, float]]],
                   bootstrap_samples: int, seed: int) -> Dict[str, Figures]:
    """profile -> figures of one method's records."""
    by_profile: Dict[str, List[dict]] = defaultdict(list)
    for r in rows:
        by_profile[r["preference_profile"]].append(r)
    out = {}
    for profile, group in by_profile.items():
        outcomes = [float(r["metrics"][OUTCOME]) for r in group]
        anchored = all(r["question_id"] in anchors for r in group)
        reward = (float(np.mean([anchored_reward(r["metrics"], anchors[r["question_id"]], r["preference"]) for r in group]))
                  if anchored else None)
        out[profile] = Figures(
            method=method, profile=profile, questions=len({r["question_id"] for r in group}),
            accuracy=float(np.mean(outcomes)),
            accuracy_ci=bootstrap_interval(outcomes, bootstrap_samples, seed),
            cost=float(np.mean([r["metrics"][COST] for r in group])),
            latency=float(np.mean([r["metrics"][LATENCY] for r in group])),
            reward=reward, share=tool_share(r["tool_calls"] for r in group),
        )
    return out


def profile_tables(records_by_method: Mapping[str, Sequence[dict]], bootstrap_samples: int, seed: int) -> Dict[str, List[Figures]]:
    """profile -> figures of every method, in the order methods were given."""
    anchors = anchors_by_question(records_by_method)
    tables: Dict[str, List[Figures]] = defaultdict(list)
    for method, rows in records_by_method.items():
        for profile, fig in method_figures(method, rows, anchors, bootstrap_samples, seed).items():
            tables[profile].append(fig)
    return dict(tables)


@dataclass
class Adherence:
    profile: str
    metric: str  # what the profile asks for: accuracy, cost, latency, or share:<slot>
    wanted: str  # "higher" or "lower"
    value: float
    balanced: float

    @property
    def followed(self) -> bool:
        return self.value > self.balanced if self.wanted == "higher" else self.value < self.balanced


def asked_metric(profile: str, weights: Mapping[str, float]) -> Tuple[str, str]:
    """The metric a profile asks for, and which way: its largest weight besides the balanced mix."""
    if profile.startswith(("prefer:", "avoid:")):
        slot = profile.split(":", 1)[1]
        return f"share:{slot}", "higher" if profile.startswith("prefer:") else "lower"
    top = max((OUTCOME, COST, LATENCY), key=lambda m: weights.get(m, 0.0))
    return ({OUTCOME: "accuracy", COST: "cost", LATENCY: "latency"}[top], "higher" if top == OUTCOME else "lower")


def _value(fig: Figures, metric: str) -> float:
    if metric.startswith("share:"):
        return fig.share.get(metric.split(":", 1)[1], 0.0)
    return {"accuracy": fig.accuracy, "cost": fig.cost, "latency": fig.latency}[metric]


def adherence(figures: Mapping[str, Figures], weights: Mapping[str, Mapping[str, float]]) -> List[Adherence]:
    """For each non-balanced profile of one method: the asked-for metric there and under balanced."""
    if BALANCED not in figures:
        return []
    out = []
    for profile, fig in figures.items():
        if profile == BALANCED:
            continue
        metric, wanted = asked_metric(profile, weights[profile])
        out.append(Adherence(profile, metric, wanted, _value(fig, metric), _value(figures[BALANCED], metric)))
    return out


def slots_of(weights: Mapping[str, float]) -> List[str]:
    return [k[len(CALLS_PREFIX):] for k in weights if k.startswith(CALLS_PREFIX)]
