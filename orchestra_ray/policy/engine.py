"""Generation engines: token ids in, token ids and their log-probs out, weights loaded by name.

`HFEngine` implements the interface with `transformers` (batched, KV cache, CPU or CUDA). Any other
engine (a vLLM engine, say) only has to provide `generate` and `load_weights` with these meanings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Mapping, Protocol, Sequence

import numpy as np
import torch


@dataclass
class Generation:
    token_ids: List[int]
    logprobs: List[float]  # of each generated token, under the sampling distribution
    finish_reason: str  # "stop" (a stop token was generated) or "length"


class Engine(Protocol):
    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float, stop_token_ids: Sequence[int]
    ) -> List[Generation]: ...

    def load_weights(self, weights: Mapping[str, object]) -> None: ...


class HFEngine:
    def __init__(self, model, pad_token_id: int, max_batch_size: int = 64, share_weights: bool = False):
        """`share_weights`: on CPU, loaded float arrays of the model's dtype become the parameters
        themselves instead of being copied in: the published weights in shared memory are then read
        in place by every engine on the node (generation never writes its weights)."""
        self.model = model.eval()
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.share_weights = share_weights and self.device.type == "cpu"

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids) -> List[Generation]:
        """Sequences are generated in batches of at most `max_batch_size`, which bounds the memory
        of the prefill's attention."""
        out: List[Generation] = []
        for i in range(0, len(prompts), self.max_batch_size):
            out.extend(self._generate(prompts[i : i + self.max_batch_size], max_new_tokens, temperature, stop_token_ids))
        return out

    @torch.no_grad()
    def _generate(self, prompts, max_new_tokens, temperature, stop_token_ids) -> List[Generation]:
        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the same position for batched decoding.
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        greedy = temperature <= 0
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_k=None,
            top_p=None,
            eos_token_id=list(stop_token_ids),
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[:, width:].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu()  # (batch, new, vocab), before any processor
        if not greedy and temperature != 1.0:
            logits = logits / temperature
        lps = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        stops = set(stop_token_ids)
        result = []
        for i in range(len(prompts)):
            toks, lp = [], []
            finish = "length"
            for t in range(new.shape[1]):
                tok = int(new[i, t])
                toks.append(tok)
                lp.append(float(lps[i, t]))
                if tok in stops:
                    finish = "stop"
                    break
            result.append(Generation(toks, lp, finish))
        return result

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, object]) -> None:
        params = self.model.state_dict(keep_vars=True)  # includes tied and buffer entries
        with warnings.catch_warnings():
            # Object-store arrays are read-only; they are only read here (copied, or shared by a
            # model that never writes them).
            warnings.simplefilter("ignore", UserWarning)
            for name, value in weights.items():
                if name not in params:
                    raise KeyError(f"engine model has no parameter '{name}'")
                p = params[name]
                t = torch.from_numpy(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
                if t.shape != p.shape:
                    raise ValueError(f"weight '{name}' has shape {tuple(t.shape)}, the engine's model {tuple(p.shape)}")
                if p.device.type == "cpu" and t.dtype == p.dtype and t.device.type == "cpu" and p.is_contiguous():
                    if self.share_weights and t.is_floating_point():
                        p.data = t
                    else:  # numpy's memcpy: several times faster than a one-thread torch copy_
                        np.copyto(p.data.numpy(), t.detach().numpy())
                else:
                    p.data.copy_(t.to(p.dtype))
