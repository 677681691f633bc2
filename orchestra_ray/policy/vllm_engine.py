"""The engine interface on vLLM (the optional `vllm` extra, selected by `policy.engine: vllm`).

Generation from token ids with the log-prob of each sampled token under the sampling distribution
(vLLM's processed log-probs: after temperature, as the learner computes them), and weights loaded
in place into the running engine after each update: the rollout worker hands it the published
arrays, the engine's own worker copies them onto the GPU with the model's `load_weights`, and the
prefix cache is dropped so that no KV computed by older weights is reused.

The engine runs in the rollout worker's process (vLLM's in-process engine core), so loading weights
passes references, not pickled copies.

A multi-turn episode's turns share their prefix (turn k's prompt is turn k-1's prompt, its generated
tokens and the observation), and automatic prefix caching (`enable_prefix_caching`, on unless
`policy.vllm` says otherwise) finds the KV blocks of that prefix by their token ids, so each turn
prefills only its new tokens: what `HFEngine` does with a kept cache per episode
(`orchestra_ray/policy/kv_cache.py`), with no episode ids, paged, and evicted by vLLM's block manager.

With `adapter` (LoRA training, `trainer.lora.publish: adapter`) the engine is started with
`enable_lora`, and a version is the adapter's factors alone: they are written as a peft adapter
folder and every later generation names it in a `LoRARequest` (a new id per version; the one
before is removed from vLLM's adapter cache). The base weights never change.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from orchestra_ray.policy.engine import Generation


class VLLMWeightLoader:
    """Mixed into vLLM's GPU worker (`worker_extension_cls`): what `collective_rpc` calls there."""

    def orchestra_load_weights(self, weights: Mapping[str, object]) -> int:
        import numpy as np
        import torch

        model = self.model_runner.model
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype

        def tensors():
            for name, value in weights.items():
                t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value, copy=False))
                yield name, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        loaded = model.load_weights(tensors())
        return len(loaded) if loaded is not None else len(weights)


class VLLMEngine:
    def __init__(self, model_path: str, dtype: str = "float32", max_batch_size: int = 64,
                 options: Optional[Dict] = None, adapter: Optional[Tuple[int, float, Sequence[str]]] = None):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("policy.engine=vllm needs vLLM: pip install 'orchestra-ray[vllm]' on a machine "
                              "with a GPU") from exc
        opts = dict(options or {})
        opts.setdefault("enable_prefix_caching", True)  # later turns reuse the KV of earlier ones
        self.adapter, self.lora_request, self.adapter_dir = adapter, None, None
        if adapter is not None:
            opts.setdefault("enable_lora", True)
            # vLLM accepts only some ranks here: the smallest of them that holds the adapter's
            opts.setdefault("max_lora_rank", next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= adapter[0]),
                                                  adapter[0]))
            opts.setdefault("max_loras", 1)
            self.adapter_dir = tempfile.mkdtemp(prefix="orchestra-ray-adapters-")
            atexit.register(shutil.rmtree, self.adapter_dir, True)
        self.llm = LLM(model=model_path, dtype=dtype, max_num_seqs=max_batch_size, seed=opts.pop("seed", 0),
                       worker_extension_cls=f"{__name__}.VLLMWeightLoader", logprobs_mode="processed_logprobs",
                       **opts)

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
                 stop_token_ids: Sequence[int], on_token=None) -> List[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=max(0.0, temperature), max_tokens=max_new_tokens, logprobs=0,
                                stop_token_ids=list(stop_token_ids), detokenize=False, skip_special_tokens=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False,
                                 lora_request=self.lora_request)
        result = []
        for out in outs:
            c = out.outputs[0]
            toks = list(c.token_ids)
            # One dict per generated token; the sampled token is always in it.
            lps = [float(step[tok].logprob) for tok, step in zip(toks, c.logprobs or [])]
            if len(lps) != len(toks):
                raise RuntimeError(f"vLLM returned {len(lps)} log-probs for {len(toks)} tokens")
            result.append(Generation(toks, lps, "stop" if c.finish_reason == "stop" else "length"))
        if on_token is not None:  # the offline LLM returns whole generations: their tokens come at the end
            for i, gen in enumerate(result):
                for tok in gen.token_ids:
                    on_token(i, tok)
        return result

    def load_weights(self, weights: Mapping[str, object]) -> None:
        if self.adapter is not None:
            self._load_adapter(weights)
        else:
            self.llm.collective_rpc("orchestra_load_weights", args=(dict(weights),))
        self.llm.reset_prefix_cache()

    def _load_adapter(self, factors: Mapping[str, object]) -> None:
        from vllm.lora.request import LoRARequest

        from orchestra_ray.policy.lora import write_adapter

        previous = self.lora_request
        number = 1 if previous is None else previous.lora_int_id + 1
        path = os.path.join(self.adapter_dir, f"v{number}")
        rank, alpha, targets = self.adapter
        write_adapter(factors, rank, alpha, targets, path)
        self.lora_request = LoRARequest(f"policy-v{number}", number, path)
        if previous is not None:
            remove = getattr(self.llm.llm_engine, "remove_lora", None)
            if remove is not None:
                remove(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)
