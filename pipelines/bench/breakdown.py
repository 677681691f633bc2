"""Step-breakdown benchmark: where the wall time of a GRPO step goes, for a config (the quickstart
by default). A `Trainer` runs warm start and a few steps on the connected cluster; each step's wall
time is split into the stages the actors time themselves:

- generation, tools (tool and expert calls), rollout_other (parsing, tokenising, episode logic):
  rollout-worker seconds, averaged over the pool's workers (the pool works in parallel);
- weight_sync: the learner's publish plus the workers' pull-and-load (averaged over workers);
- reference_logprobs, learner_update: the reference model's and the learner's compute;
- driver: the driver's own work between the phases (reward, advantages, trajectory and metrics files);
- waiting: the rest, wall time in none of these (Ray dispatch and transfers, idle workers): the
  orchestration overhead.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List, Sequence

import ray

from orchestra_ray.rollout.sample import Sample

STAGES = ("generation", "tools", "rollout_other", "weight_sync", "reference_logprobs", "learner_update", "driver", "waiting")


def step_shares(wall_s: float, records: Sequence[Sample], workers: int, rollout_wall_s: float, learn_wall_s: float,
                learner: Dict[str, float], reference_s: float) -> Dict[str, float]:
    """Seconds per stage of one step (summing to `wall_s`)."""
    worker: Dict[str, float] = {}
    for rec in records:
        for k, v in rec.rollout_seconds.items():
            worker[k] = worker.get(k, 0.0) + v / workers
    gen, tools, sync = worker.get("generation", 0.0), worker.get("tools", 0.0), worker.get("weight_sync", 0.0)
    seconds = {
        "generation": gen,
        "tools": tools,
        "rollout_other": max(0.0, worker.get("worker", 0.0) - gen - tools - sync),
        "weight_sync": sync + learner.get("publish_s", 0.0),
        "reference_logprobs": reference_s,
        "learner_update": learner.get("update_s", 0.0),
        "driver": max(0.0, wall_s - rollout_wall_s - learn_wall_s),
    }
    busy = sum(seconds.values())
    if busy > wall_s:  # timers of parallel actors can overlap the step's edges by a hair
        seconds = {k: v * wall_s / busy for k, v in seconds.items()}
        busy = wall_s
    seconds["waiting"] = wall_s - busy
    return seconds


def run(cfg, zoo, families, run_dir: str, progress) -> Dict:
    """Warm start, then `cfg.trainer.steps` GRPO steps, each broken down."""
    from orchestra_ray import checkpoint as ckpt
    from pipelines.train import Trainer
    from pipelines.workers import Workers

    workers = Workers(cfg, families, zoo.slots)
    tr = Trainer(cfg, zoo, os.path.join(run_dir, "train"), progress, families, workers)  # warm start and step
    os.makedirs(tr.run_dir, exist_ok=True)
    policy_path = tr.policy_path()
    workers.start(policy_path)
    if cfg.warm_start.enabled:
        tr.warm_start(policy_path)
    warm_dir = os.path.join(ckpt.checkpoints_dir(tr.run_dir), "warm_start")
    workers.publish_start(warm_dir, {"step": 0})
    workers.start_reference(os.path.join(warm_dir, "policy"))
    workers.wait_ready()

    def reference_busy_s() -> float:  # no reference model when trainer.kl_coef = 0
        return ray.get(workers.reference.busy_seconds.remote()) if workers.reference is not None else 0.0

    steps: List[Dict] = []
    for _ in range(cfg.trainer.steps):
        ref0 = reference_busy_s()
        t0 = time.perf_counter()
        metrics = tr.grpo_step()
        wall = time.perf_counter() - t0
        ref_s = reference_busy_s() - ref0
        samples = tr.last_scored.samples
        seconds = step_shares(wall, samples, max(1, metrics["rollout_workers"]), metrics["rollout_s"],
                              metrics["learn_s"], metrics, ref_s)
        steps.append({"step": metrics["step"], "wall_s": wall, "samples": len(samples),
                      "generated_tokens": sum(r.generated_tokens for r in samples),
                      "turns": sum(r.turns for r in samples) / max(1, len(samples)),
                      "seconds": seconds, "shares": {k: v / wall for k, v in seconds.items()}})
        progress.note(f"step {metrics['step']}: {wall:.1f}s, waiting {seconds['waiting'] / wall:.1%}")
    # The first step pays one-off costs (first forward passes, page faults of the first weights).
    timed = steps[1:] if len(steps) > 1 else steps
    total = sum(s["wall_s"] for s in timed)
    shares = {k: sum(s["seconds"][k] for s in timed) / total for k in STAGES}
    r = cfg.rollout
    return {
        "benchmark": "breakdown",
        "config": {"tasks_per_step": r.tasks_per_step, "group_size": r.group_size, "num_workers": r.num_workers,
                   "max_turns": r.max_turns, "max_new_tokens": r.max_new_tokens, "steps": cfg.trainer.steps},
        "steps_counted": [s["step"] for s in timed],
        "step_wall_s_median": statistics.median(s["wall_s"] for s in timed),
        "samples_per_s": sum(s["samples"] for s in timed) / total,
        "tokens_per_s": sum(s["generated_tokens"] for s in timed) / total,
        # Multi-turn episodes: each turn is one generate call per worker, so generation seconds per
        # step over turns per episode is what a turn's generation costs (rollout.kv_cache shows here).
        "turns_per_episode": statistics.mean(s["turns"] for s in timed),
        "generation_s_per_step": statistics.mean(s["seconds"]["generation"] for s in timed),
        "shares": shares,
        "orchestration_overhead": shares["waiting"],
        "steps": steps,
    }


def table(result: Dict) -> str:
    c = result["config"]
    lines = [f"step breakdown: {c['tasks_per_step']} tasks x {c['group_size']} samples, {c['num_workers']} rollout "
             f"worker(s); steps {result['steps_counted']} (the first is a warm-up when there are more)",
             f"median step {result['step_wall_s_median']:.2f} s, {result['samples_per_s']:.2f} samples/s, "
             f"{result['tokens_per_s']:.1f} generated tokens/s; {result['turns_per_episode']:.2f} turns per episode, "
             f"generation {result['generation_s_per_step']:.2f} s per step "
             f"({result['generation_s_per_step'] / max(result['turns_per_episode'], 1e-9):.2f} s per turn)",
             f"{'stage':<20} {'share':>7}"]
    for k in STAGES:
        lines.append(f"{k:<20} {result['shares'][k]:>6.1%}")
    lines.append(f"orchestration overhead (waiting): {result['orchestration_overhead']:.1%}")
    return "\n".join(lines)
