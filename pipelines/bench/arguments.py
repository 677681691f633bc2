"""The options of `orchestra-ray bench NAME` (runner.py runs them)."""

from __future__ import annotations

import argparse

from pipelines.bench.runner import BENCHMARKS


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """The `bench` subcommand of `sub` (the CLI's subparsers), with every benchmark's options."""
    p = sub.add_parser("bench", help=f"a benchmark ({', '.join(BENCHMARKS)}): prints a table, writes bench.json")
    p.add_argument("name", metavar="NAME", choices=BENCHMARKS, help=" | ".join(BENCHMARKS))
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="trl, breakdown, copy, routes and generate: the config (default quickstart; copy: mixed) and dotted overrides")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a new local cluster)")
    p.add_argument("--root", default=None, help="where the bench-NAME-TIMESTAMP directory goes (default: runs)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions: weight-sync per model (default 5), trl per side (default 3)")
    p.add_argument("--workers", type=int, default=2, help="weight-sync: rollout workers receiving the weights (default 2)")
    p.add_argument("--sizes", default="10M,100M,500M",
                   help="weight-sync: model sizes (default 10M,100M,500M); learner: one size (default 100M)")
    p.add_argument("--learners", default="1,2", help="learner: numbers of ranks, the first 1 (default 1,2)")
    p.add_argument("--samples", type=int, default=8, help="learner: samples per GRPO batch (default 8)")
    p.add_argument("--tokens", type=int, default=128, help="learner: tokens per sample, +-25%% (default 128)")
    p.add_argument("--micro-batch-size", type=int, default=4, help="learner: sequences per micro-batch (default 4)")
    p.add_argument("--modes", default="share,copy",
                   help="weight-sync: share (workers read the published weights in place, as on CPU), copy "
                        "(each copies them into its own parameters) and/or collective (broadcast over a gloo group, "
                        "weights.transport=collective); default share,copy")
    p.add_argument("--calls", type=int, default=20, help="sandbox: timed calls per variant (default 20)")
    p.add_argument("--pool-calls", type=int, default=40, help="sandbox: calls in flight for the pool's throughput (default 40)")
    p.add_argument("--pool-workers", type=int, default=2, help="sandbox: code-interpreter workers (default 2)")
    p.add_argument("--tasks", type=int, default=48, help="copy: domain tasks probed per split, train and held-out (0: all; default 48)")
    p.add_argument("--steps", type=int, default=None,
                   help="GRPO steps, the first a warm-up: breakdown (default 4), trl per side and rep (default 5); "
                        "learner: measured steps after one warm-up (default 3)")
    p.add_argument("--prompts", type=int, default=64, help="generate: prompts in the call, in batches of rollout.max_batch_size (default 64)")
    p.add_argument("--new-tokens", type=int, default=None,
                   help="generate: tokens each row decodes (default: the config's rollout.max_new_tokens)")
    return p
