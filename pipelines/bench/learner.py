"""Learner benchmark: one learner against a sharded group of N ranks (FSDP2) on the same
Qwen3-shaped model (~100M parameters, built from its config, random weights, no download) and the
same synthetic GRPO batch. Per number of ranks: the update's and the publish's seconds (medians
after a warm-up step), and per rank the bytes of parameters, gradients and AdamW state it holds, its
resident memory before the measured steps and its peak over them.

The machine's cores are split evenly: one learner gets them all as torch threads, each of N ranks
1/N of them, so the step times compare the same compute."""

from __future__ import annotations

import os
import statistics
import tempfile
from typing import Dict, List, Sequence

import numpy as np
import ray

from actors.common import ActorResources
from actors.learner import LearnerSpec
from actors.learner_group import start_learner, stop_learner
from actors.weight_transport import start_weight_store
from orchestra_ray.config import TrainerConfig
from orchestra_ray.rollout.sample import TrainBatch
from pipelines.bench.weight_sync import SIZES, qwen3_config
from pipelines.bench.weight_sync_actors import random_model


# The weight-sync sizes, the quickstart's tiny policy and SmolLM2-135M's shape (a Llama; random
# weights, as memory does not depend on their values).
LEARNER_SIZES: Dict[str, Dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=384, vocab_size=2048, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32),
    **SIZES,
    "135M": dict(model_type="llama", hidden_size=576, num_hidden_layers=30, intermediate_size=1536, vocab_size=49152,
                 num_attention_heads=9, num_key_value_heads=3, head_dim=64),
}


def build_model(shape: Dict, out_dir: str) -> str:
    """A randomly initialised Qwen3-architecture model and a small tokenizer, saved as a Hugging Face folder."""
    from orchestra_ray.policy.tiny_model import train_tokenizer

    random_model(qwen3_config(shape), seed=0).save_pretrained(out_dir)
    train_tokenizer(["the learner benchmark builds its own tokenizer"] * 4, 300).save_pretrained(out_dir)
    return out_dir


def synthetic_batch(samples: int, tokens: int, vocab: int, seed: int = 0) -> TrainBatch:
    """GRPO samples of `tokens` +- 25 % tokens, the policy's own on the later half."""
    rng = np.random.default_rng(seed)
    ids, masks, old, adv = [], [], [], []
    for _ in range(samples):
        n = int(rng.integers(tokens * 3 // 4, tokens * 5 // 4 + 1))
        ids.append(rng.integers(0, vocab, n).tolist())
        masks.append([0] * (n // 2) + [1] * (n - n // 2))
        old.append([0.0] * (n // 2) + (-rng.random(n - n // 2)).tolist())
        adv.append(float(rng.normal()))
    return TrainBatch(ids, masks, old, adv)


def measure(path: str, n: int, batch: TrainBatch, steps: int, micro_batch_size: int) -> Dict:
    cores = max(1, os.cpu_count() or 1)
    threads = max(1, cores // n)
    # padded micro-batches of `micro_batch_size`: what the table reports and the plan is compared with
    t = TrainerConfig(lr=1e-6, kl_coef=0.0, num_learners=n, micro_batch_size=micro_batch_size, max_tokens_per_micro_batch=0,
                      num_cpus=cores / n, torch_threads=threads)
    learner = start_learner(LearnerSpec(path, t, "float32", "cpu", 0, ActorResources(cores / n)), start_weight_store())
    try:
        ray.get(learner.publish.remote())
        ray.get(learner.train_step.remote(batch, None, 1.0))  # warm-up: first pass, optimizer state created
        ray.get(learner.reset_peak_memory.remote())
        rows = [ray.get(learner.train_step.remote(batch, None, 1.0)) for _ in range(steps)]
        ranks = ray.get(learner.memory.remote())
    finally:
        stop_learner(learner, group=n > 1)
    return {"num_learners": n, "torch_threads_per_rank": threads,
            "update_s": statistics.median(r["update_s"] for r in rows),
            "publish_s": statistics.median(r["publish_s"] for r in rows), "ranks": ranks}


def planned_bytes(config: Dict, n: int, batch: TrainBatch, micro_batch_size: int) -> float:
    """The memory plan's estimate of one rank's peak for this batch (orchestra_ray/policy/memory_plan.py)."""
    from orchestra_ray.policy.memory_plan import Layout, ModelShape, plan

    longest = max(len(t) for t in batch.token_ids)
    own = max(sum(m) for m in batch.loss_masks)
    lay = Layout(num_learners=n, micro_batch_size=micro_batch_size, seq_len=longest, policy_tokens=own, reference=False)
    return plan(ModelShape.from_config(config), lay).total("learner rank")


def run(size: str, counts: Sequence[int], steps: int, samples: int, tokens: int, micro_batch_size: int) -> Dict:
    shape = LEARNER_SIZES[size]
    batch = synthetic_batch(samples, tokens, shape["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(shape, os.path.join(tmp, "model"))
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path).to_dict()
        params = _parameters(AutoConfig.from_pretrained(path))
        results = [measure(path, n, batch, steps, micro_batch_size) for n in counts]
    base = results[0]["ranks"][0]
    for r in results:
        planned = planned_bytes(config, r["num_learners"], batch, micro_batch_size)
        for m in r["ranks"]:
            m["optimizer_share_of_one"] = m["optimizer_bytes"] / base["optimizer_bytes"]
            m["planned_bytes"] = planned
            m["plan_error"] = planned / m["peak_rss_bytes"] - 1.0
    return {"size": size, "parameters": params, "steps": steps, "samples": samples, "tokens": tokens,
            "micro_batch_size": micro_batch_size, "results": results}


def _parameters(config) -> int:
    from transformers import AutoModelForCausalLM
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def table(result: Dict) -> str:
    mb = 2**20
    lines = [f"learner: Qwen3-shaped {result['size']} model ({result['parameters'] / 1e6:.0f}M parameters), "
             f"{result['samples']} samples of ~{result['tokens']} tokens, micro-batches of {result['micro_batch_size']}, "
             f"medians of {result['steps']} steps",
             f"{'ranks':>5} {'rank':>4} {'update s':>9} {'publish s':>9} {'params MB':>10} {'grads MB':>9} "
             f"{'AdamW MB':>9} {'x one':>6} {'RSS before MB':>13} {'peak RSS MB':>11} {'plan MB':>8} {'error':>7}"]
    for r in result["results"]:
        for m in r["ranks"]:
            lines.append(f"{r['num_learners']:>5} {int(m['rank']):>4} {r['update_s']:>9.2f} {r['publish_s']:>9.3f} "
                         f"{m['param_bytes'] / mb:>10.0f} {m['grad_bytes'] / mb:>9.0f} {m['optimizer_bytes'] / mb:>9.0f} "
                         f"{m['optimizer_share_of_one']:>6.2f} {m['rss_at_reset_bytes'] / mb:>13.0f} {m['peak_rss_bytes'] / mb:>11.0f} "
                         f"{m['planned_bytes'] / mb:>8.0f} {m['plan_error']:>+7.1%}")
    return "\n".join(lines)


def check_args(size: str, counts: List[int], steps: int) -> None:
    from orchestra_ray.errors import ConfigError

    if size not in LEARNER_SIZES:
        raise ConfigError(f"--sizes: one of {', '.join(LEARNER_SIZES)} for bench learner, got {size!r}")
    if not counts or counts[0] != 1 or any(n < 1 for n in counts):
        raise ConfigError(f"--learners must start with 1 (the baseline) and list counts >= 1, got {counts}")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
