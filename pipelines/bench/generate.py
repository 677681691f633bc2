"""`orchestra-ray bench generate [CONFIG]`: one generate call of `--prompts` prompts through a rollout
worker's transformers engine as the config sets it (`HFEngine`, the system prompt prefilled once,
whatever `policy.engine` and `rollout.share_prompt_prefill` say; the rollout
dtype, `policy.device`, batches of `rollout.max_batch_size`, `rollout.torch_threads`), with the KV
cache in buffers allocated per call and with transformers' concatenating cache; each variant in a
fresh process, so its peak resident memory (Linux's ru_maxrss) is its own (host memory: on a GPU,
the device's memory is not in it).

The prompts are first turns of the training split's FRAMES questions under the balanced profile
(system prompt, question, preference: the shape the policy sees); every row decodes `new_tokens`
tokens (no stop token), the length of the longest turn. Greedy, so both variants generate the
same tokens and the figures compare the caches alone.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.task import FRAMES
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.rollout.chat import ChatFormat, user_message
from pipelines.families import Families
from pipelines.zoo import Zoo, initial_policy_path

VARIANTS = {"preallocated KV buffers": True, "concatenating cache (transformers)": False}


def _measure(path: str, prompts: List[List[int]], new_tokens: int, preallocate: bool, threads: int, dtype: str,
             device: str, max_batch_size: int) -> Dict:
    """In a fresh process: load the policy, one warm-up call of two prompts, then the timed call."""
    import torch

    from orchestra_ray.policy.engine import HFEngine
    from orchestra_ray.policy.tiny_model import load_policy

    torch.set_num_threads(threads)
    model, tokenizer = load_policy(path, dtype, device)
    engine = HFEngine(model, tokenizer.pad_token_id, max_batch_size=max_batch_size, kv_cache_tokens=0, preallocate=preallocate)
    engine.generate(prompts[:2], max_new_tokens=2, temperature=0.0, stop_token_ids=[])
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    gens = engine.generate(prompts, max_new_tokens=new_tokens, temperature=0.0, stop_token_ids=[])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "generated_tokens": sum(len(g.token_ids) for g in gens),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "rss_after_load_gb": loaded,
            "tokens": [g.token_ids for g in gens]}


def run(cfg: OrchestraConfig, zoo: Zoo, families: Families, n_prompts: int, new_tokens: int) -> Dict:
    if n_prompts < 1 or new_tokens < 1:
        raise ConfigError(f"--prompts and --new-tokens must be >= 1, got {n_prompts} and {new_tokens}")
    questions = families.train.get(FRAMES, [])[:n_prompts]
    if len(questions) < n_prompts:
        raise ConfigError(f"bench generate needs {n_prompts} FRAMES training questions; this config has {len(questions)}")
    from orchestra_ray.policy.tiny_model import load_tokenizer

    path = initial_policy_path(zoo, cfg, families)
    chat = ChatFormat(load_tokenizer(path))
    pref = profile_vector("balanced", zoo.slots, cfg.preferences.weights)
    prompts = [chat.prompt_ids(zoo.system_prompt, user_message(q.problem, pref)) for q in questions]
    threads = cfg.rollout.torch_threads or 1
    dtype, device, batch = cfg.rollout.dtype or cfg.policy.dtype, cfg.policy.device, cfg.rollout.max_batch_size
    out = {"policy": cfg.policy.model, "prompts": n_prompts, "new_tokens": new_tokens, "torch_threads": threads,
           "dtype": dtype, "device": device, "max_batch_size": batch,
           "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))], "variants": {}}
    ctx = multiprocessing.get_context("spawn")
    tokens = []
    for name, preallocate in VARIANTS.items():
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            r = pool.submit(_measure, path, prompts, new_tokens, preallocate, threads, dtype, device, batch).result()
        tokens.append(r.pop("tokens"))
        r["tokens_per_s"] = r["generated_tokens"] / r["seconds"]
        out["variants"][name] = r
    out["same_tokens"] = tokens[0] == tokens[1]
    return out


def table(result: Dict) -> str:
    lo, hi = result["prompt_tokens"]
    lines = [f"{result['policy']}: {result['prompts']} prompts of {lo}-{hi} tokens, {result['new_tokens']} new tokens each, "
             f"{result['torch_threads']} torch threads, {result['dtype']} on {result['device']}, calls of at most "
             f"{result['max_batch_size']}; both variants generated the same tokens: {result['same_tokens']}",
             "", "| KV cache | seconds | generated tokens/s | peak RSS (GB) | after loading (GB) |", "|---|---|---|---|---|"]
    for name, r in result["variants"].items():
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gb']:.2f} | {r['rss_after_load_gb']:.2f} |")
    return "\n".join(lines)
