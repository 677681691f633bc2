"""A learned non-LLM router, trained with RLlib PPO: the conventional RL baseline the LLM
orchestrator is compared against. It sees a question's embedding and the preference vector P and
picks one expert slot in a single step (orchestra_ray/reports/router_env.py); it is judged by the same
anchored orchestration reward as the orchestrator.

Layout of `out_dir`: `router.json` (slots, metric order, feature size), `rl_module/` (the RLlib
RLModule checkpoint the router acts with) and `training.json` (per-iteration figures).
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Mapping, Sequence

import numpy as np

from orchestra_ray.grpo.preferences import metric_names
from orchestra_ray.reports.router_env import RoutingDataError, RoutingEnv, check_features, check_preferences, observation

ROUTER_FILE = "router.json"
MODULE_DIR = "rl_module"
TRAINING_FILE = "training.json"

# Small on purpose: the router must train in seconds per iteration on a CPU.
HIDDENS = [64, 64]
BATCH = 1024
MINIBATCH = 256
EPOCHS = 8
LR = 1e-3
ENVS_PER_RUNNER = 16  # batches the policy's forward pass over episodes that last a single step


def _ppo_config(env_config: Dict, seed: int):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(RoutingEnv, env_config=env_config)
        # Sampling and learning both run in this process: the policy is tiny and a remote
        # EnvRunner or Learner would spend more on transfers than on work.
        .env_runners(num_env_runners=0, num_envs_per_env_runner=ENVS_PER_RUNNER, num_cpus_per_env_runner=0)
        .learners(num_learners=0, num_gpus_per_learner=0)
        .resources(num_gpus=0)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=HIDDENS, vf_share_layers=False))
        .training(
            train_batch_size_per_learner=BATCH,
            minibatch_size=MINIBATCH,
            num_epochs=EPOCHS,
            lr=LR,
            # One-step episodes: the return is the reward, so no discounting or bootstrapping.
            gamma=1.0,
            lambda_=1.0,
            entropy_coeff=0.01,
            vf_loss_coeff=0.5,
        )
        .reporting(metrics_num_episodes_for_smoothing=BATCH)
        .debugging(seed=seed, log_level="ERROR")
    )


def train_router(
    features: np.ndarray,
    arm_metrics: Sequence[Sequence[Mapping[str, float]]],
    preferences: Sequence[Mapping[str, float]],
    slots: Sequence[str],
    out_dir: str,
    iterations: int = 30,
    seed: int = 0,
    progress=None,
) -> Dict:
    """Train the router with PPO on the connected Ray cluster and save it to `out_dir`.

    Returns {"iterations": [{"iteration", "episode_return_mean", "wall_s"}, ...], "wall_s",
    "slots", "out_dir"}; the same goes to out_dir/training.json. `progress`, if given, gets one
    line per iteration through its `note(text)` method (pipelines.progress.Progress)."""
    import ray
    import torch
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"router 'iterations' must be a positive integer, got {iterations!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"router 'seed' must be an integer, got {seed!r}")
    env_config = {"features": features, "arm_metrics": arm_metrics, "preferences": preferences,
                  "slots": list(slots) if isinstance(slots, (list, tuple)) else slots, "seed": seed}
    env = RoutingEnv(env_config)  # checks the data here, with a clear message, before RLlib builds anything
    if not ray.is_initialized():
        raise RuntimeError("train_router runs on a connected Ray cluster; call ray.init(...) first")
    # The checked copies go to RLlib, so every env it builds starts from validated data.
    env_config = {"features": env.features, "arm_metrics": env.arm_metrics, "preferences": env.preferences,
                  "slots": env.slots, "seed": seed}
    os.makedirs(out_dir, exist_ok=True)

    # The policy is tiny: intra-op threads only add synchronisation, and on a busy machine they
    # slow every update several-fold. The caller's setting is restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    algo = None
    history: List[Dict] = []
    t0 = time.monotonic()
    try:
        algo = _ppo_config(env_config, seed).build_algo()
        for i in range(1, iterations + 1):
            t = time.monotonic()
            result = algo.train()
            ret = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN)
            row = {"iteration": i, "episode_return_mean": None if ret is None else float(ret),
                   "wall_s": round(time.monotonic() - t, 3)}
            history.append(row)
            if progress is not None:
                shown = "n/a" if ret is None else f"{ret:.4f}"
                progress.note(f"router iteration {i:>3}/{iterations}  episode return {shown}  {row['wall_s']:.1f}s")
        # The local EnvRunner's module carries the weights the Learner synced after the last update.
        algo.get_module().save_to_path(os.path.join(out_dir, MODULE_DIR))
    finally:
        if algo is not None:
            algo.stop()
        torch.set_num_threads(threads)

    meta = {"slots": env.slots, "metrics": metric_names(env.slots), "feature_dim": int(env.features.shape[1])}
    with open(os.path.join(out_dir, ROUTER_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    summary = {"iterations": history, "wall_s": round(time.monotonic() - t0, 3), "slots": env.slots,
               "out_dir": os.path.abspath(out_dir)}
    with open(os.path.join(out_dir, TRAINING_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


class Router:
    """A trained router: greedy (arg-max) slot per question under its preference vector."""

    def __init__(self, module, slots: List[str], feature_dim: int):
        self.module, self.slots, self.feature_dim = module, slots, feature_dim

    def choose(self, features: np.ndarray, preference_vectors: Sequence[Mapping[str, float]]) -> List[str]:
        import torch
        from ray.rllib.core import Columns

        x = check_features(features)
        if x.shape[1] != self.feature_dim:
            raise RoutingDataError(
                f"router 'features' have {x.shape[1]} dims but the router was trained on {self.feature_dim}"
            )
        prefs = check_preferences(preference_vectors, self.slots, name="preference_vectors")
        if len(prefs) != x.shape[0]:
            raise RoutingDataError(
                f"router got {x.shape[0]} questions but {len(prefs)} preference vectors (one per question)"
            )
        obs = np.stack([observation(f, p, self.slots) for f, p in zip(x, prefs)])
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: torch.from_numpy(obs)})
        logits = out[Columns.ACTION_DIST_INPUTS].cpu().numpy()
        return [self.slots[int(a)] for a in np.argmax(logits, axis=1)]


def load_router(out_dir: str) -> Router:
    """The router `train_router` saved to `out_dir`; needs no Ray cluster."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    meta_path = os.path.join(out_dir, ROUTER_FILE)
    module_path = os.path.join(out_dir, MODULE_DIR)
    if not os.path.isfile(meta_path) or not os.path.isdir(module_path):
        raise FileNotFoundError(f"no trained router in '{out_dir}' (expected {ROUTER_FILE} and {MODULE_DIR}/)")
    with open(meta_path) as f:
        meta = json.load(f)
    module = RLModule.from_checkpoint(os.path.abspath(module_path))
    module.eval()
    return Router(module, list(meta["slots"]), int(meta["feature_dim"]))
