"""GPU check: the learner group's path at N=1 on one CUDA GPU, without Ray.

    python -m pipelines.gpu_check [--model Qwen__Qwen3-0.6B] [--steps 3] [--out DIR]

A Qwen3-shaped policy is built from a shipped config (orchestra_ray/data/model_configs; random
weights, no download), sharded with FSDP2 at world size 1 in this one process (float32 weights,
bfloat16 compute, as the production overlay's ranks), and takes GRPO steps on a synthetic batch
with the learner's update code. Each version is gathered to host memory as rank 0 publishes it
and loaded by a transformers engine on the same GPU, which then generates. Printed: step time,
sync time (gather + load), peak GPU memory of the step against the memory plan's estimate, and
`gpu_check.json` (under --out, default $OUT when set, else the current directory).

It needs PyTorch (with CUDA), transformers and numpy only: it runs where Ray is not installed.
`--device cpu` runs the same path on CPU (gloo) as a dry run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from orchestra_ray.config import MODEL_CONFIGS
from orchestra_ray.grpo.policy_update import grpo_update
from orchestra_ray.policy import sharding
from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.memory_plan import GB, RUNTIME_BYTES, Layout, ModelShape, plan
from orchestra_ray.rollout.sample import TrainBatch


def synthetic_batch(samples: int, tokens: int, vocab: int, seed: int = 0) -> TrainBatch:
    """GRPO samples of `tokens` tokens, the policy's own on the later half."""
    rng = np.random.default_rng(seed)
    half = tokens // 2
    ids = [rng.integers(0, vocab, tokens).tolist() for _ in range(samples)]
    masks = [[0] * half + [1] * (tokens - half) for _ in range(samples)]
    old = [[0.0] * half + (-rng.random(tokens - half)).tolist() for _ in range(samples)]
    return TrainBatch(ids, masks, old, rng.normal(size=samples).tolist())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(config: Dict, dtype: torch.dtype, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=dtype)


def run(args) -> Dict:
    with open(args.model if os.path.isfile(args.model) else os.path.join(MODEL_CONFIGS, args.model + ".json")) as f:
        config = json.load(f)
    config = {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")}
    if args.layers:
        config["num_hidden_layers"] = args.layers
    device_type = "cuda" if args.device == "cuda" else "cpu"
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (use --device cpu for a dry run)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mesh = sharding.join_group(0, 1, "127.0.0.1", port, 600.0, device_type)
    compute = "bfloat16" if device_type == "cuda" else "none"

    # The learner: built on the host, sharded, moved to the device (as a group's rank 0 does).
    lm = build(config, torch.float32, seed=0)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    names = sharding.entry_names(lm)
    full = dict(lm.state_dict())
    root = sharding.shard(lm, mesh, compute, False)
    sharding.materialize(lm, full, root.compute_device)
    del full
    device = root.compute_device
    optimizer = torch.optim.AdamW(root.parameters(), lr=1e-6)
    targets = {n: np.zeros(tuple(t.shape), np.float32) for n, t in lm.state_dict().items() if n in names}

    # The rollout engine on the same device, in bfloat16 (as a GPU engine serves).
    engine_dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    engine = HFEngine(build(config, engine_dtype, seed=1).to(device), pad_token_id=0, max_batch_size=args.samples)

    batch = synthetic_batch(args.samples, args.tokens, config["vocab_size"])
    rows: List[Dict] = []
    for step in range(args.steps):
        if device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        stats = grpo_update(root, optimizer, batch, None, clip_low=0.2, clip_high=0.28, kl_coef=0.0, max_grad_norm=1.0,
                            micro_batch_size=args.micro_batch_size)
        _sync(device)
        t1 = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() if device_type == "cuda" else 0
        sharding.gather_state(lm, names, targets, 64 * 2**20)  # rank 0's publish buffer
        t2 = time.perf_counter()
        engine.load_weights(targets)
        _sync(device)
        t3 = time.perf_counter()
        rows.append({"step": step, "step_s": t1 - t0, "gather_s": t2 - t1, "load_s": t3 - t2, "sync_s": t3 - t1,
                     "peak_gpu_bytes": float(peak), "loss": stats["loss"], "grad_norm": stats["grad_norm"]})
        print(f"step {step}: {t1 - t0:.2f} s, sync {t3 - t1:.3f} s (gather {t2 - t1:.3f}, load {t3 - t2:.3f}), "
              f"peak GPU memory {peak / GB:.2f} GB, loss {stats['loss']:+.4f}", flush=True)

    # The engine serves the last version: its weights are the gathered ones, and it generates.
    name = names[-1]
    loaded = engine.model.state_dict()[name].float().cpu().numpy()
    expected = targets[name].astype(loaded.dtype) if engine_dtype == torch.float32 else \
        torch.from_numpy(targets[name]).to(engine_dtype).float().numpy()
    match = bool(np.array_equal(loaded, expected))
    gen = engine.generate([list(range(1, 17))] * 4, max_new_tokens=16, temperature=1.0, stop_token_ids=[])

    shape = ModelShape.from_config(config)
    lay = Layout(num_learners=1, learner_device=device_type, param_dtype="float32",
                 compute_dtype="bfloat16" if compute == "bfloat16" else "float32", gradient_checkpointing=True,
                 micro_batch_size=args.micro_batch_size, seq_len=args.tokens, policy_tokens=args.tokens - args.tokens // 2,
                 reference=False)
    planned = plan(shape, lay)
    # what PyTorch's allocator holds (the plan's runtime row is outside it)
    # the transformers engine's weights share this GPU (the plan puts a rollout worker on a GPU of its own)
    engine_bytes = shape.parameters() * 2
    planned_gpu = planned.total("learner rank", "gpu") - RUNTIME_BYTES["cuda"] + engine_bytes if device_type == "cuda" else 0.0
    measured = [r for r in rows[1:]] or rows  # the first step creates AdamW's state
    peak = max(r["peak_gpu_bytes"] for r in measured)
    result = {
        "device": torch.cuda.get_device_name(0) if device_type == "cuda" else "cpu",
        "model": args.model, "parameters": shape.parameters(), "layers": config["num_hidden_layers"],
        "samples": args.samples, "tokens": args.tokens, "micro_batch_size": args.micro_batch_size,
        "steps": rows, "step_s": float(np.median([r["step_s"] for r in measured])),
        "sync_s": float(np.median([r["sync_s"] for r in measured])), "peak_gpu_bytes": peak,
        "planned_gpu_bytes": planned_gpu, "plan_error": (planned_gpu / peak - 1.0) if peak else None,
        "engine_weights_match": match, "generated_tokens": sum(len(g.token_ids) for g in gen),
    }
    print(f"{result['device']}: {shape.parameters() / 1e9:.2f}B-parameter Qwen3-shaped model, {args.samples} samples x "
          f"{args.tokens} tokens, micro-batches of {args.micro_batch_size}: step {result['step_s']:.2f} s, sync "
          f"{result['sync_s']:.3f} s, peak GPU memory {peak / GB:.2f} GB vs plan {planned_gpu / GB:.2f} GB"
          + (f" ({result['plan_error']:+.1%})" if peak else "") + f"; engine weights match: {match}", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="Qwen__Qwen3-0.6B", help="a shipped model config name or a config.json path")
    p.add_argument("--layers", type=int, default=0, help="fewer decoder layers than the config's (0: as configured)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="GRPO steps; the first (AdamW's state created) is not measured")
    p.add_argument("--out", default=os.environ.get("OUT") or ".")
    args = p.parse_args(argv)
    try:
        result = run(args)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0 if result["engine_weights_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
