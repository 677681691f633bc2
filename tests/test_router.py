"""The learned non-LLM router: the one-step routing environment (plain, no Ray) and PPO training
with RLlib on a real local Ray cluster over a synthetic zoo where the best slot is a clear function
of the question and the preference vector."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from orchestra_ray.grpo.preferences import metric_names
from orchestra_ray.grpo.reward import anchored_reward
from orchestra_ray.reports.router_env import RoutingEnv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTS = ["cheap", "fast", "expert"]
DIM = 16
ITERATIONS = 5


def weights(**w):
    out = {m: 0.0 for m in metric_names(SLOTS)}
    out.update(w)
    return out


PREFERENCES = [weights(outcome=0.2, cost=0.7, latency=0.1), weights(outcome=0.2, cost=0.1, latency=0.7)]


def synthetic_zoo(n: int, seed: int):
    """Two clusters of questions. On cluster 0 every slot is right, so the preference decides:
    `cheap` (low cost, slow) under the cost-first vector, `fast` (quick, pricey) under the
    latency-first one. On cluster 1 only `expert` is right, so it is best under both."""
    rng = np.random.default_rng(seed)
    centres = np.stack([np.ones(DIM), -np.ones(DIM)]) / np.sqrt(DIM)
    cluster = rng.integers(2, size=n)
    features = (centres[cluster] + 0.3 * rng.normal(size=(n, DIM)) / np.sqrt(DIM)).astype(np.float32)
    arm_metrics = []
    for c in cluster:
        profile = [(0.0, 1.0, c == 0), (1.0, 0.0, c == 0), (0.5, 0.5, True)]  # (cost, latency, correct)
        row = []
        for k, (cost, latency, correct) in enumerate(profile):
            m = {f"calls:{s}": float(j == k) for j, s in enumerate(SLOTS)}
            m.update(outcome=float(correct), cost=0.001 * (1 + cost + 0.05 * rng.random()),
                     latency=2.0 + 10.0 * latency + 0.1 * rng.random())
            row.append(m)
        arm_metrics.append(row)
    return features, arm_metrics, cluster


def rewards(arm_metrics, w):
    return np.array([[anchored_reward(a, arms, w) for a in arms] for arms in arm_metrics])


@pytest.fixture(scope="module")
def zoo():
    return synthetic_zoo(200, seed=0)


def env_config(zoo, **over):
    features, arm_metrics, _ = zoo
    cfg = {"features": features, "arm_metrics": arm_metrics, "preferences": PREFERENCES, "slots": SLOTS, "seed": 3}
    cfg.update(over)
    return cfg


# --- the environment, without Ray ------------------------------------------------------------


def test_observation_is_question_embedding_then_preference_weights(zoo):
    env = RoutingEnv(env_config(zoo))
    obs, info = env.reset()
    assert obs.shape == (DIM + len(metric_names(SLOTS)),) == env.observation_space.shape
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:DIM], zoo[0][info["question"]])
    w = PREFERENCES[info["preference"]]
    np.testing.assert_allclose(obs[DIM:], [w[m] for m in metric_names(SLOTS)])
    assert env.action_space.n == len(SLOTS)


def test_step_pays_the_anchored_reward_and_ends_the_episode(zoo):
    env = RoutingEnv(env_config(zoo))
    seen = set()
    for episode in range(60):
        _, info = env.reset()
        q, p = info["question"], info["preference"]
        seen.add(p)
        action = episode % len(SLOTS)
        _, reward, terminated, truncated, step_info = env.step(action)
        arms = zoo[1][q]
        assert reward == anchored_reward(arms[action], arms, PREFERENCES[p])
        assert terminated and not truncated and step_info["slot"] == SLOTS[action]
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(action)  # one step per episode
    assert seen == {0, 1}


def test_episodes_follow_the_seed(zoo):
    def draws(seed):
        env = RoutingEnv(env_config(zoo, seed=seed))
        return [tuple(env.reset()[1].values()) for _ in range(30)]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def _bad(zoo):
    features, arm_metrics, _ = zoo
    unknown_metric = [list(row) for row in arm_metrics]
    unknown_metric[4] = [dict(m, tokens=1.0) for m in unknown_metric[4]]
    missing_metric = [list(row) for row in arm_metrics]
    missing_metric[2] = [{k: v for k, v in m.items() if k != "cost"} for m in missing_metric[2]]
    nan_features = features.copy()
    nan_features[1, 0] = np.nan
    return [
        ({"arm_metrics": arm_metrics[:-1]}, r"'arm_metrics' has 199 questions but 'features' has 200 rows"),
        ({"features": features[:0], "arm_metrics": []}, r"'features' must be a non-empty 2-D array"),
        ({"features": features[0]}, r"'features' must be a non-empty 2-D array"),
        ({"features": nan_features}, r"'features' holds NaN"),
        ({"preferences": []}, r"'preferences' must be a non-empty list"),
        ({"preferences": [dict(PREFERENCES[0], speed=1.0)]}, r"'preferences\[0\]' has unknown metric\(s\) \['speed'\]"),
        ({"arm_metrics": unknown_metric}, r"'arm_metrics\[4\]\[0\] \(slot 'cheap'\)' has unknown metric\(s\) \['tokens'\]"),
        ({"arm_metrics": missing_metric}, r"'arm_metrics\[2\]\[0\] \(slot 'cheap'\)' lacks metric\(s\) \['cost'\]"),
        ({"slots": SLOTS[:2]}, r"'arm_metrics\[0\]' must list one metrics dict per slot \(2\), got 3"),
        ({"slots": []}, r"'slots' must be a non-empty list"),
        ({"slots": ["cheap", "cheap", "expert"]}, r"'slots' has duplicate names"),
        ({"seed": "zero"}, r"'seed' must be an integer"),
    ]


def test_inconsistent_data_is_rejected_naming_the_problem(zoo):
    for override, message in _bad(zoo):
        with pytest.raises(ValueError, match=message):
            RoutingEnv(env_config(zoo, **override))
    cfg = env_config(zoo)
    del cfg["preferences"]
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['preferences'\]"):
        RoutingEnv(cfg)


# --- PPO training with RLlib on a real local Ray cluster --------------------------------------


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(cluster, zoo, tmp_path_factory):
    from pipelines.router import train_router

    out_dir = str(tmp_path_factory.mktemp("router"))
    features, arm_metrics, _ = zoo
    lines = []

    class Lines:
        def note(self, text):
            lines.append(text)

    summary = train_router(features, arm_metrics, PREFERENCES, SLOTS, out_dir, iterations=ITERATIONS, seed=0,
                           progress=Lines())
    return out_dir, summary, lines


@pytest.fixture(scope="module")
def heldout():
    return synthetic_zoo(100, seed=1)


def test_trained_router_picks_the_best_slot_in_a_fresh_process(trained, heldout):
    """The router loaded from out_dir by another Python process picks the reward-maximising slot
    on held-out questions under each preference, and earns more than a uniformly random choice."""
    out_dir, _, _ = trained
    features, arm_metrics, _ = heldout
    data = os.path.join(out_dir, "heldout.npy")
    np.save(data, features)
    script = ("import json, sys, numpy as np; from pipelines.router import load_router; "
              "r = load_router(sys.argv[1]); x = np.load(sys.argv[2]); prefs = json.loads(sys.argv[3]); "
              "print(json.dumps([r.choose(x, [p] * len(x)) for p in prefs]))")
    proc = subprocess.run([sys.executable, "-c", script, out_dir, data, json.dumps(PREFERENCES)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    choices = json.loads(proc.stdout.strip().splitlines()[-1])
    for w, chosen in zip(PREFERENCES, choices):
        r = rewards(arm_metrics, w)
        picked = np.array([SLOTS.index(s) for s in chosen])
        best_share = np.mean(picked == r.argmax(axis=1))
        router_mean, random_mean = r[np.arange(len(r)), picked].mean(), r.mean()
        assert best_share >= 0.9, (w, best_share)
        assert router_mean > random_mean + 0.1, (w, router_mean, random_mean)


def test_router_is_deterministic_and_matches_across_processes(trained, heldout):
    from pipelines.router import load_router

    out_dir, _, _ = trained
    features = heldout[0][:20]
    router = load_router(out_dir)
    prefs = [PREFERENCES[i % 2] for i in range(len(features))]
    first = router.choose(features, prefs)
    assert router.choose(features, prefs) == first == load_router(out_dir).choose(features, prefs)
    assert set(first) <= set(SLOTS)


def test_training_record(trained):
    out_dir, summary, lines = trained
    with open(os.path.join(out_dir, "training.json")) as f:
        assert json.load(f) == summary
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    assert all(r["wall_s"] > 0 and 0.0 <= r["episode_return_mean"] <= 1.0 for r in rows)
    # The first iteration samples with the untrained policy; the last one with a trained one.
    assert rows[-1]["episode_return_mean"] > rows[0]["episode_return_mean"] + 0.1
    assert len(lines) == ITERATIONS and lines[-1].split()[:3] == ["router", "iteration", f"{ITERATIONS}/{ITERATIONS}"]


def test_router_rejects_bad_input(trained, zoo):
    from pipelines.router import load_router, train_router

    router = load_router(trained[0])
    features = zoo[0][:3]
    with pytest.raises(ValueError, match="have 8 dims but the router was trained on 16"):
        router.choose(features[:, :8], PREFERENCES[:1] * 3)
    with pytest.raises(ValueError, match="3 questions but 2 preference vectors"):
        router.choose(features, PREFERENCES)
    with pytest.raises(ValueError, match=r"'preference_vectors\[0\]' has unknown metric\(s\) \['speed'\]"):
        router.choose(features, [{"speed": 1.0}] * 3)
    with pytest.raises(FileNotFoundError, match="no trained router"):
        load_router(os.path.join(trained[0], "missing"))
    with pytest.raises(ValueError, match="'arm_metrics' has 2 questions but 'features' has 3 rows"):
        train_router(features, zoo[1][:2], PREFERENCES, SLOTS, trained[0] + "-bad", iterations=1)
    with pytest.raises(ValueError, match="'iterations' must be a positive integer"):
        train_router(features, zoo[1][:3], PREFERENCES, SLOTS, trained[0] + "-bad", iterations=0)
