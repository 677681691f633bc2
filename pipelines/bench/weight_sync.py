"""Weight-sync benchmark: seconds from the learner publishing a new version until every rollout
worker has pulled and loaded it, against one in-memory copy of the same bytes (the bound for a
sync on one machine). Both are timed in the same process run, interleaved, repetition by repetition."""

from __future__ import annotations

import statistics
import time
from typing import Dict, List, Sequence

import numpy as np
import ray

# Qwen3-architecture models of about 10M, 100M and 500M parameters (embeddings tied, as Qwen3's small models).
SIZES: Dict[str, Dict] = {
    "10M": dict(hidden_size=256, num_hidden_layers=6, intermediate_size=768, vocab_size=16384,
                num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "100M": dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048, vocab_size=32768,
                 num_attention_heads=12, num_key_value_heads=4, head_dim=64),
    "500M": dict(hidden_size=1536, num_hidden_layers=16, intermediate_size=4608, vocab_size=32768,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=96),
}
MODES = ("share", "copy", "collective")
# The smallest useful model, for tests.
TINY = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64, vocab_size=256,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16)


def qwen3_config(shape: Dict) -> Dict:
    return {"model_type": "qwen3", "tie_word_embeddings": True, "max_position_embeddings": 2048, **shape}


def copy_seconds(nbytes: int) -> float:
    """One in-memory copy of `nbytes` into an existing buffer (the pages already mapped)."""
    n = max(1, nbytes // 4)
    src, dst = np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    np.copyto(dst, src)
    t0 = time.perf_counter()
    np.copyto(dst, src)
    return time.perf_counter() - t0


# Rounds before the measured ones. A version is written into store memory while the workers still
# read the previous one, so a run cycles through a few buffers; the first write into each faults its
# pages in (about 0.3 s for 400 MB here), once per run, not once per sync.
WARMUP_ROUNDS = 3


def measure_size(name: str, shape: Dict, workers: int, reps: int, mode: str) -> Dict:
    from pipelines.bench.weight_sync_actors import SyncSource, SyncTarget
    from actors.weight_transport import start_weight_store

    config = qwen3_config(shape)
    store = start_weight_store()
    collective = mode == "collective"
    # collective: broadcast into each worker's staging buffer, which it then reads in place (as on CPU)
    source = SyncSource.options(num_cpus=0).remote(config, store, collective=collective)
    targets = [SyncTarget.options(num_cpus=0).remote(config, store, mode != "copy", collective=collective)
               for _ in range(workers)]
    try:
        nbytes, params = ray.get([source.nbytes.remote(), source.parameters.remote()])
        ray.get([t.ready.remote() for t in targets])
        rows: List[Dict[str, float]] = []
        warmup: List[float] = []
        for rep in range(reps + WARMUP_ROUNDS):
            copy_s = copy_seconds(nbytes)
            t0 = time.perf_counter()
            pub = ray.get(source.publish.remote())
            pulls = ray.get([t.sync.remote() for t in targets])
            sync_s = time.perf_counter() - t0
            if rep < WARMUP_ROUNDS:
                warmup.append(sync_s)
            else:
                rows.append({"sync_s": sync_s, "copy_s": copy_s, "publish_s": pub["publish_s"],
                             "pull_s": max(p["pull_s"] for p in pulls), "load_s": max(p["load_s"] for p in pulls)})
        versions = {p["version"] for p in pulls}
        expected = ray.get(source.first_value.remote())
        last = reps + WARMUP_ROUNDS - 1
        if versions != {last} or any(v != expected for v in ray.get([t.first_value.remote() for t in targets])):
            raise RuntimeError(f"workers ended on weight versions {sorted(versions)}, not on the published {last}")
    finally:
        for actor in [source, store, *targets]:
            ray.kill(actor)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "model": name, "mode": mode, "parameters": int(params), "bytes": int(nbytes), "workers": workers, "reps": reps,
        "sync_s": med["sync_s"], "copy_s": med["copy_s"], "ratio": med["sync_s"] / med["copy_s"],
        "parts_s": {k: med[k] for k in ("publish_s", "pull_s", "load_s")},
        "sync_s_all": [r["sync_s"] for r in rows], "copy_s_all": [r["copy_s"] for r in rows],
        "warmup_sync_s": warmup,
    }


def check_args(sizes: Sequence[str], workers: int, reps: int, shapes: Dict[str, Dict] = None,
               modes: Sequence[str] = ("share",)) -> None:
    from orchestra_ray.errors import ConfigError

    shapes = shapes or SIZES
    unknown = [s for s in sizes if s not in shapes]
    if unknown or not sizes:
        raise ConfigError(f"unknown model size(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(shapes)}")
    if not modes or set(modes) - set(MODES):
        raise ConfigError(f"unknown sync mode(s) {', '.join(sorted(set(modes) - set(MODES))) or '(none given)'}; "
                          f"choose from {', '.join(MODES)}")
    if workers < 1 or reps < 1:
        raise ConfigError(f"--workers and --reps must be >= 1, got {workers} and {reps}")


def run(sizes: Sequence[str] = ("10M", "100M", "500M"), workers: int = 2, reps: int = 5,
        modes: Sequence[str] = MODES, shapes: Dict[str, Dict] = None) -> Dict:
    """`modes`: "share" (workers read the published arrays in place, as rollout workers on CPU do),
    "copy" (each worker copies them into its own parameters, as an engine on a GPU must) and/or
    "collective" (the source broadcasts over a gloo group into each worker's staging buffer, which
    the worker reads in place; `weights.transport: collective`)."""
    shapes = shapes or SIZES
    check_args(sizes, workers, reps, shapes, modes)
    results = [measure_size(s, shapes[s], workers, reps, m) for s in sizes for m in modes]
    return {"benchmark": "weight-sync", "workers": workers, "reps": reps, "warmup_rounds": WARMUP_ROUNDS, "results": results,
            "target": {"model": "100M", "workers": 2, "max_ratio": 3.0}}


def table(result: Dict) -> str:
    lines = [f"weight sync to {result['workers']} rollout worker(s), median of {result['reps']} reps "
             f"after {WARMUP_ROUNDS} warm-up rounds (publish + all workers pulled and loaded) vs one in-memory copy of the same bytes",
             f"{'model':>6} {'mode':>10} {'params':>12} {'MB':>8} {'sync s':>9} {'copy s':>9} {'ratio':>7}"
             f" {'publish s':>10} {'pull s':>9} {'load s':>9}"]
    for r in result["results"]:
        p = r["parts_s"]
        lines.append(f"{r['model']:>6} {r['mode']:>10} {r['parameters']:>12,} {r['bytes'] / 1e6:>8.1f} {r['sync_s']:>9.4f} "
                     f"{r['copy_s']:>9.4f} {r['ratio']:>6.2f}x {p['publish_s']:>10.4f} {p['pull_s']:>9.4f} {p['load_s']:>9.4f}")
    return "\n".join(lines)
