"""Routing as a one-step decision: the conventional RL alternative to the LLM orchestrator.

One episode is one (question, preference vector) pair drawn at random; the agent sees the
question's embedding next to the preference weights and picks the single expert slot to consult;
the reward is what relaying that slot's answer earns under the orchestration reward, anchored
against every slot's answer to the same question, as the evaluation scores the orchestrator.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import gymnasium
import numpy as np

from orchestra_ray.grpo.preferences import metric_names
from orchestra_ray.grpo.reward import anchored_reward


class RoutingDataError(ValueError):
    """The per-question data given to the router is inconsistent or incomplete."""


def _check_slots(slots: Any) -> List[str]:
    if not isinstance(slots, (list, tuple)) or not slots:
        raise RoutingDataError("router data 'slots' must be a non-empty list of slot names")
    if not all(isinstance(s, str) and s for s in slots):
        raise RoutingDataError(f"router data 'slots' must hold non-empty strings, got {list(slots)!r}")
    if len(set(slots)) != len(slots):
        raise RoutingDataError(f"router data 'slots' has duplicate names: {list(slots)!r}")
    return list(slots)


def check_features(features: Any, name: str = "features") -> np.ndarray:
    """The embeddings as a finite float32 matrix [n, d] with n, d >= 1."""
    try:
        x = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise RoutingDataError(f"router data '{name}' is not a numeric array: {e}") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RoutingDataError(f"router data '{name}' must be a non-empty 2-D array [questions, dims], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise RoutingDataError(f"router data '{name}' holds NaN or infinite values")
    return x


def check_preferences(preferences: Any, slots: Sequence[str], name: str = "preferences") -> List[Dict[str, float]]:
    """Preference vectors restricted to the zoo's metrics; a metric left out weighs 0."""
    if not isinstance(preferences, (list, tuple)) or not preferences:
        raise RoutingDataError(f"router data '{name}' must be a non-empty list of preference vectors (dicts)")
    known = metric_names(slots)
    out = []
    for i, p in enumerate(preferences):
        if not isinstance(p, Mapping):
            raise RoutingDataError(f"router data '{name}[{i}]' must be a dict metric -> weight, got {type(p).__name__}")
        unknown = sorted(set(p) - set(known))
        if unknown:
            raise RoutingDataError(
                f"router data '{name}[{i}]' has unknown metric(s) {unknown} (known: {', '.join(known)})"
            )
        w = {}
        for m in known:
            v = p.get(m, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RoutingDataError(f"router data '{name}[{i}]['{m}']' must be a finite number, got {v!r}")
            w[m] = float(v)
        out.append(w)
    return out


def _check_arm_metrics(arm_metrics: Any, n_questions: int, slots: Sequence[str]) -> List[List[Dict[str, float]]]:
    if not isinstance(arm_metrics, (list, tuple)):
        raise RoutingDataError("router data 'arm_metrics' must be a list over questions of lists over slots")
    if len(arm_metrics) != n_questions:
        raise RoutingDataError(
            f"router data 'arm_metrics' has {len(arm_metrics)} questions but 'features' has {n_questions} rows"
        )
    known = metric_names(slots)
    out = []
    for q, arms in enumerate(arm_metrics):
        if not isinstance(arms, (list, tuple)) or len(arms) != len(slots):
            got = len(arms) if isinstance(arms, (list, tuple)) else type(arms).__name__
            raise RoutingDataError(
                f"router data 'arm_metrics[{q}]' must list one metrics dict per slot ({len(slots)}), got {got}"
            )
        row = []
        for a, m in enumerate(arms):
            where = f"arm_metrics[{q}][{a}] (slot '{slots[a]}')"
            if not isinstance(m, Mapping):
                raise RoutingDataError(f"router data '{where}' must be a dict metric -> value, got {type(m).__name__}")
            unknown = sorted(set(m) - set(known))
            if unknown:
                raise RoutingDataError(f"router data '{where}' has unknown metric(s) {unknown} (known: {', '.join(known)})")
            missing = [k for k in known if k not in m]
            if missing:
                raise RoutingDataError(f"router data '{where}' lacks metric(s) {missing}")
            for k in known:
                v = m[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise RoutingDataError(f"router data '{where}['{k}']' must be a finite number, got {v!r}")
            row.append({k: float(m[k]) for k in known})
        out.append(row)
    return out


def observation(features: np.ndarray, weights: Mapping[str, float], slots: Sequence[str]) -> np.ndarray:
    """What the router sees: the question embedding, then P in `metric_names(slots)` order."""
    p = np.asarray([weights.get(m, 0.0) for m in metric_names(slots)], dtype=np.float32)
    return np.concatenate([np.asarray(features, dtype=np.float32), p])


class RoutingEnv(gymnasium.Env):
    """env_config: features [n, d], arm_metrics [n][slots] dicts, preferences (list of P dicts),
    slots, and optionally seed. Action k = consult slot k and relay its answer; one step per episode."""

    metadata: Dict[str, Any] = {}

    def __init__(self, env_config: Mapping[str, Any]):
        if not isinstance(env_config, Mapping):
            raise RoutingDataError(f"RoutingEnv config must be a dict, got {type(env_config).__name__}")
        missing = [k for k in ("features", "arm_metrics", "preferences", "slots") if k not in env_config]
        if missing:
            raise RoutingDataError(f"RoutingEnv config lacks key(s) {missing}")
        self.slots = _check_slots(env_config["slots"])
        self.features = check_features(env_config["features"])
        self.arm_metrics = _check_arm_metrics(env_config["arm_metrics"], self.features.shape[0], self.slots)
        self.preferences = check_preferences(env_config["preferences"], self.slots)
        seed = env_config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RoutingDataError(f"RoutingEnv config 'seed' must be an integer, got {seed!r}")
        # Parallel copies of the env (RLlib env runners, vector slots) must not draw the same episodes.
        worker = getattr(env_config, "worker_index", 0) or 0
        vector = getattr(env_config, "vector_index", 0) or 0
        self._base_seed = seed + 10_007 * worker + 101 * vector

        dim = self.features.shape[1] + len(metric_names(self.slots))
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(len(self.slots))
        self.np_random, _ = gymnasium.utils.seeding.np_random(self._base_seed)
        self._current = None  # (question, preference) of the running episode

    def reward(self, question: int, preference: int, slot: int) -> float:
        """The anchored orchestration reward of relaying `slot`'s answer to `question` under
        preference vector number `preference`."""
        arms = self.arm_metrics[question]
        return anchored_reward(arms[slot], arms, self.preferences[preference])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed if seed is None else seed + self._base_seed)
        q = int(self.np_random.integers(len(self.arm_metrics)))
        p = int(self.np_random.integers(len(self.preferences)))
        self._current = (q, p)
        obs = observation(self.features[q], self.preferences[p], self.slots)
        return obs, {"question": q, "preference": p}

    def step(self, action):
        if self._current is None:
            raise RuntimeError("RoutingEnv.step called before reset (each episode is one step)")
        a = int(action)
        if not 0 <= a < len(self.slots):
            raise ValueError(f"action {action!r} is not a slot index in [0, {len(self.slots)})")
        q, p = self._current
        self._current = None
        r = self.reward(q, p, a)
        obs = observation(self.features[q], self.preferences[p], self.slots)
        return obs, r, True, False, {"question": q, "preference": p, "slot": self.slots[a]}
