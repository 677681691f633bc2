"""One GRPO step as named stages, each with plain inputs and outputs; `Trainer.grpo_step` composes them:

    collect ──────► score ───────────► reference ──────► update ─────────► record
    rollout pool,    reward, advantages,  log-probs of the   the learner's     metrics.jsonl,
    step ledger      filters, staleness,  frozen start on    PPO-clip steps,   Ray metrics
    (Samples)        the ledger's check   the TrainBatch     a new version
                     (orchestra_ray.grpo.scoring);
                     then the Parquet file of the scored samples
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import pyarrow.parquet as pq
import ray

from actors.metrics import record_step
from orchestra_ray.config import OrchestraConfig, RolloutConfig
from orchestra_ray.families.task import Task
from orchestra_ray.grpo import scoring
from orchestra_ray.grpo.ledger import StepLedger
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME
from orchestra_ray.reports.evaluation import summarise_families
from orchestra_ray.rollout.sample import Sample
from orchestra_ray.rollout.trajectory import trajectory_rows
from pipelines.rollout_ahead import Collected


# ---- collect ------------------------------------------------------------------------------------
def collect(rollout: Callable[..., List[Sample]], step: int, tasks: List[Task], r: RolloutConfig, seed: int) -> Collected:
    """One step's groups from `rollout` (the rollout pool's run), every episode going through the
    step's ledger."""
    t0 = time.time()
    ledger = StepLedger(step)
    samples = rollout(tasks, r.group_size, r.temperature, seed=seed * 100_003 + step, ledger=ledger)
    return Collected(samples, ledger, time.time() - t0)


# ---- score --------------------------------------------------------------------------------------
def score(got: Collected, learner_version: int, cfg: OrchestraConfig) -> scoring.Scored:
    return scoring.score(got.samples, got.ledger, learner_version, cfg.reward, cfg.rollout.max_staleness)


# ---- reference ----------------------------------------------------------------------------------
def reference(model, batch, temperature: float, kl_coef: float):
    """The reference log-probs of `batch` (a TrainBatch or its object ref) as a future the learner
    resolves; None without a batch or a KL term."""
    if batch is None or kl_coef <= 0:
        return None
    return model.logprobs.remote(batch, temperature)


# ---- update -------------------------------------------------------------------------------------
def update(learner, batch, ref, temperature: float) -> Dict[str, float]:
    """The learner's step on `batch` and its statistics, the new version among them; {} without a
    batch (a step whose samples were all filtered out leaves the weights as they were)."""
    if batch is None:
        return {}
    return ray.get(learner.train_step.remote(batch, ref, temperature))


# ---- record -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepTimes:
    rollout_s: float  # the rollouts themselves
    rollout_wait_s: float  # what the loop waited for them (less than rollout_s when run ahead)
    learn_s: float  # reference and update


def write_trajectories(run_dir: str, run_id: str, step: int, samples: List[Sample]) -> None:
    d = os.path.join(run_dir, "trajectories")
    os.makedirs(d, exist_ok=True)
    final = os.path.join(d, f"step_{step:06d}.parquet")
    pq.write_table(trajectory_rows(run_id, step, samples), final + ".tmp")
    os.replace(final + ".tmp", final)


def step_metrics(step: int, scored: scoring.Scored, stats: Dict[str, float], times: StepTimes, rollout_workers: int,
                 per_family: bool) -> Dict:
    """The step's line of metrics.jsonl."""
    samples, kept = scored.samples, scored.kept
    n = len(samples)
    gen_tokens = sum(g.generated_tokens for g in samples)
    metrics = {
        "step": step,
        "weight_version_used": sorted({g.weight_version for g in samples}),
        # A step whose samples were all filtered out leaves the weights (and version) as they were.
        "weight_version": int(stats["version"]) if stats else max(g.weight_version for g in samples),
        "updated": bool(stats),
        "reward": sum(g.reward for g in samples) / n,
        "accuracy": sum(g.metrics[OUTCOME] for g in samples) / n,
        "cost": sum(g.metrics[COST] for g in samples) / n,
        "latency": sum(g.metrics[LATENCY] for g in samples) / n,
        "turns": sum(g.turns for g in samples) / n,
        "format_error_rate": sum(1 for g in samples if g.format_errors) / n,
        "tokens_per_s": gen_tokens / max(times.rollout_s, 1e-9),
        "rollout_s": times.rollout_s,
        "rollout_wait_s": times.rollout_wait_s,
        "staleness": {"max": max(g.staleness for g in kept) if kept else 0,
                      "mean": sum(g.staleness for g in kept) / len(kept) if kept else 0.0},
        "learn_s": times.learn_s,
        "filters": scored.counts.as_dict(),
        # Failed tool and expert calls by whose fault they were (orchestra_ray.rollout.failures).
        "tool_failures": {kind: sum(1 for g in samples for c in g.tool_calls if c.get("error_kind") == kind)
                          for kind in ("infrastructure", "data")},
        "cost_by_profile": _mean_by(samples, lambda g: g.preference_profile, lambda g: g.metrics[COST]),
        "families": summarise_families(samples) if per_family else {},
        **{k: v for k, v in stats.items() if k != "version"},
    }
    metrics["rollout_workers"] = rollout_workers
    metrics["ledger"] = {**scored.books, "trained": len(kept), "trained_unique": len({g.episode_id for g in kept})}
    return metrics


def record(run_dir: str, step: int, scored: scoring.Scored, stats: Dict[str, float], times: StepTimes,
           rollout_workers: int, per_family: bool) -> Dict:
    """Writes the step's metrics line and exports its Ray metrics; returns the metrics. (The step's
    trajectories are written as soon as they are scored, `write_trajectories`, so that a failed
    update loses none of them.)"""
    metrics = step_metrics(step, scored, stats, times, rollout_workers, per_family)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(metrics) + "\n")
    record_step(metrics, scored.samples, metrics["weight_version"])
    return metrics


def _mean_by(samples: List[Sample], key: Callable[[Sample], str], value: Callable[[Sample], float]) -> Dict[str, float]:
    acc: Dict[str, List[float]] = {}
    for g in samples:
        acc.setdefault(key(g), []).append(value(g))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}
