"""`orchestra-ray bench NAME`: benchmarks that measure and report, never pass or fail on speed.
Each prints a table and writes bench.json (with the machine it ran on and the load around it) into
its own run directory, `<root>/bench-<name>-<timestamp>/`."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable, Dict, Optional

BENCHMARKS = ("trl", "weight-sync", "sandbox", "breakdown", "copy", "learner", "routes", "generate")
DEFAULT_REPS = {"weight-sync": 5, "trl": 3}
SIZES_DEFAULT = "10M,100M,500M"  # the CLI's --sizes default (weight-sync's)
DEFAULT_STEPS = {"breakdown": 4, "trl": 5, "learner": 3}


def machine() -> Dict:
    import numpy
    import ray
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray.__version__, "numpy": numpy.__version__,
            "load_average": list(os.getloadavg())}


def bench_dir(root: str, name: str) -> str:
    path = os.path.join(root, f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 1
    while os.path.exists(path):  # two runs in the same second
        suffix += 1
        path = os.path.join(root, f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
    os.makedirs(path)
    return path


def save(result: Dict, run_dir: str, started: Dict) -> str:
    result = {**result, "machine": {**started, "load_average_after": list(os.getloadavg())}}
    path = os.path.join(run_dir, "bench.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def start_local_cluster(address: Optional[str]) -> Callable[[], None]:
    """Joins `address`, or starts a local cluster of this machine's CPUs; returns how to leave it
    (nothing to do when the caller was already connected)."""
    import ray

    if ray.is_initialized():
        return lambda: None
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}}
    if address:
        ray.init(address=address, runtime_env=env, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=env, logging_level="WARNING")
    return ray.shutdown


def run_benchmark(name: str, args, config_path: Optional[str] = None, overrides=()) -> str:
    """Runs benchmark `name` with the CLI's arguments; prints its table and returns bench.json's path."""
    import ray

    started = machine()
    reps = args.reps if args.reps is not None else DEFAULT_REPS.get(name, 1)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(name, 1)
    if name in ("routes", "generate"):
        from orchestra_ray.config_load import load_config
        from pipelines.bench import generate, routes
        from pipelines.families import load_families
        from pipelines.zoo import load_zoo

        cfg = load_config(config_path, list(overrides))
        zoo = load_zoo(cfg)
        run_dir = bench_dir(args.root or cfg.run.root, name)
        if name == "routes":
            module, result = routes, routes.run(cfg, zoo, load_families(cfg, zoo))
        else:
            new_tokens = args.new_tokens if args.new_tokens is not None else cfg.rollout.max_new_tokens
            module, result = generate, generate.run(cfg, zoo, load_families(cfg, zoo), args.prompts, new_tokens)
        text = module.table(result)
    elif name == "copy":
        from orchestra_ray.config_load import load_config
        from orchestra_ray.errors import ConfigError
        from pipelines.bench import copy_probes as module
        from pipelines.families import load_families
        from pipelines.zoo import load_zoo

        if args.tasks < 0:
            raise ConfigError(f"--tasks must be >= 0 (0: all), got {args.tasks}")
        cfg = load_config(config_path, list(overrides))
        zoo = load_zoo(cfg)
        run_dir = bench_dir(args.root or cfg.run.root, name)
        result = module.run(cfg, zoo, load_families(cfg, zoo), args.tasks)
        text = module.table(result)
    elif name in ("breakdown", "trl"):
        from orchestra_ray.config_load import load_config
        from orchestra_ray.errors import ConfigError
        from pipelines.bench import breakdown as bench_breakdown, trl_grpo as bench_trl
        from pipelines.cluster import connect
        from pipelines.families import load_families
        from pipelines.progress import Progress
        from pipelines.zoo import load_zoo

        if steps < (2 if name == "trl" else 1):
            raise ConfigError(f"--steps must be >= {2 if name == 'trl' else 1}, got {steps}")
        if reps < 1:
            raise ConfigError(f"--reps must be >= 1, got {reps}")
        if name == "trl":
            # TRL's side needs the task's shape fixed before the config is read; the user's
            # overrides (group size, lengths, lr ...) come after and apply to both sides.
            base = bench_trl.routing_overrides(steps, 8, 8, 40)
            cfg = load_config(config_path, [*base, *overrides, f"trainer.steps={steps}", f"trainer.checkpoint_every={steps}"])
        else:
            cfg = load_config(config_path, [f"trainer.steps={steps}", "eval.enabled=false", *overrides])
            if cfg.rollout.max_staleness > 0:  # its stages are timed one after another
                raise ConfigError("bench breakdown splits the synchronous step; it takes rollout.max_staleness=0, "
                                  f"got {cfg.rollout.max_staleness}")
        zoo = load_zoo(cfg)
        families = load_families(cfg, zoo)
        run_dir = bench_dir(args.root or cfg.run.root, name)
        progress = Progress()
        leave = lambda: None  # noqa: E731
        if not ray.is_initialized():
            progress.note(connect(cfg, args.address))
            leave = ray.shutdown
        module = bench_trl if name == "trl" else bench_breakdown
        try:
            if name == "trl":
                result = bench_trl.run(cfg, zoo, families, run_dir, reps, progress)
            else:
                result = bench_breakdown.run(cfg, zoo, families, run_dir, progress)
        finally:
            leave()
        text = module.table(result)
    else:
        from orchestra_ray.errors import ConfigError
        from pipelines.bench import weight_sync as bench_weight_sync

        if overrides or config_path:
            raise ConfigError(f"bench {name} takes no config or key=value overrides")
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if name == "weight-sync":
            bench_weight_sync.check_args(sizes, args.workers, reps, modes=modes)
        elif name == "learner":
            from pipelines.bench import learner as bench_learner

            size = args.sizes if args.sizes != SIZES_DEFAULT else "100M"
            counts = [int(n) for n in args.learners.split(",") if n.strip()]
            bench_learner.check_args(size, counts, steps)
        run_dir = bench_dir(args.root or "runs", name)
        leave = start_local_cluster(args.address)
        try:
            if name == "learner":
                module = bench_learner
                result = module.run(size, counts, steps, args.samples, args.tokens, args.micro_batch_size)
            elif name == "weight-sync":
                module = bench_weight_sync
                result = module.run(sizes, args.workers, reps, modes)
            else:
                from pipelines.bench import sandbox_pool as module

                result = module.run(args.calls, args.pool_calls, args.pool_workers)
        finally:
            leave()
        text = module.table(result)
    path = save(result, run_dir, started)
    print(text, flush=True)
    print(f"results: {path}", flush=True)
    return path
