"""Preference vectors P over the reward metrics, and the named profiles users pick from.

Metrics: `calls:<slot>` (how often each expert slot was called), `outcome`, `cost`, `latency`.
Weights on outcome, cost and latency are >= 0. A weight on `calls:<slot>` is signed: positive means
the user prefers that expert (more calls are better), negative means they want it avoided (fewer
calls are better); its magnitude is how much that counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

# profile name -> {metric: weight}: a config's own weights (`preferences.weights`), over the built-in
# ones of the same name, or a profile of its own
Weights = Optional[Mapping[str, Mapping[str, float]]]

OUTCOME, COST, LATENCY = "outcome", "cost", "latency"
CALLS_PREFIX = "calls:"


class PreferenceError(ValueError):
    """An unknown profile name, or a profile naming an expert the zoo does not have."""


def calls_metric(slot: str) -> str:
    return CALLS_PREFIX + slot


def metric_names(slots: Sequence[str]) -> List[str]:
    return [calls_metric(s) for s in slots] + [OUTCOME, COST, LATENCY]


@dataclass(frozen=True)
class PreferenceVector:
    profile: str
    weights: Dict[str, float]
    instruction: str

    def as_text(self) -> str:
        nums = " ".join(f"{k}={v:+.2f}" if k.startswith(CALLS_PREFIX) else f"{k}={v:.2f}" for k, v in self.weights.items())
        return f"Preference ({self.profile}): {self.instruction} P: {nums}"


_BASE = {
    "balanced": ({OUTCOME: 1 / 3, COST: 1 / 3, LATENCY: 1 / 3}, "Weigh accuracy, cost and latency equally."),
    "accuracy-first": (
        {OUTCOME: 0.8, COST: 0.1, LATENCY: 0.1},
        "Getting the answer right matters most; cost and latency matter little.",
    ),
    "cost-first": (
        {OUTCOME: 0.2, COST: 0.7, LATENCY: 0.1},
        "Keep the cost as low as you can while still answering correctly.",
    ),
    "latency-first": (
        {OUTCOME: 0.2, COST: 0.1, LATENCY: 0.7},
        "Answer as fast as you can while still answering correctly.",
    ),
}


def profile_names(slots: Sequence[str], own: Weights = None) -> List[str]:
    names = list(_BASE) + [f"prefer:{s}" for s in slots] + [f"avoid:{s}" for s in slots]
    return names + [p for p in (own or {}) if p not in names]


def check_weights(profile: str, weights: Mapping[str, float], slots: Sequence[str]) -> None:
    """A profile's own weights: metrics of this zoo, finite, outcome/cost/latency >= 0, not all 0."""
    known = metric_names(slots)
    for metric, w in weights.items():
        if metric not in known:
            raise PreferenceError(f"profile '{profile}' weighs unknown metric '{metric}' (known: {', '.join(known)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise PreferenceError(f"profile '{profile}': weight of '{metric}' must be a finite number, got {w!r}")
        if not metric.startswith(CALLS_PREFIX) and w < 0:
            raise PreferenceError(f"profile '{profile}': weight of '{metric}' must not be negative, got {w}")
    if not any(abs(w) > 0 for w in weights.values()):
        raise PreferenceError(f"profile '{profile}': every weight is 0")


def profile_vector(profile: str, slots: Sequence[str], own: Weights = None) -> PreferenceVector:
    """The preference vector of a named profile: a base name, `prefer:<slot>` / `avoid:<slot>`, or
    one the config weighs itself (`own`: its weights, checked when the config is read, replace the
    built-in ones of that name)."""
    weights = {m: 0.0 for m in metric_names(slots)}
    if own and profile in own:
        weights.update({m: float(w) for m, w in own[profile].items()})
        text = _BASE[profile][1] if profile in _BASE else f"Follow the profile {profile}."
        return PreferenceVector(profile, weights, text)
    if profile in _BASE:
        base, text = _BASE[profile]
        weights.update(base)
        return PreferenceVector(profile, weights, text)
    kind, _, slot = profile.partition(":")
    if kind in ("prefer", "avoid") and slot:
        if slot not in slots:
            raise PreferenceError(f"profile '{profile}' names unknown expert '{slot}' (known: {', '.join(slots)})")
        sign = 1.0 if kind == "prefer" else -1.0
        weights.update({calls_metric(slot): 0.6 * sign, OUTCOME: 0.2, COST: 0.1, LATENCY: 0.1})
        verb = "Use" if kind == "prefer" else "Avoid"
        return PreferenceVector(profile, weights, f"{verb} the expert {slot} whenever you can.")
    raise PreferenceError(f"unknown preference profile '{profile}' (known: {', '.join(profile_names(slots))})")
