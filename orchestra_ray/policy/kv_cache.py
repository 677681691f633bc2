"""The KV cache of live sequences between `HFEngine.generate` calls: a multi-turn episode's turns
prefill only what is new.

The episode loop is token in, token out: turn k's prompt is turn k-1's prompt, the tokens generated
for it and the observation, a prefix never rewritten. `SequenceCache` keeps, per sequence id, the
token ids whose keys and values it holds (per layer `(kv_heads, length, head_dim)`, padding removed),
and the next call feeds only the tokens after them. Correctness never rests on the id: a prompt that
does not start with the kept ids (an edited history, a reused id) is prefilled whole; new weights
drop everything (`clear`), and a call that began before them keeps nothing. Kept tokens are bounded
(`max_tokens`, least recently used sequences evicted first); an evicted sequence is prefilled whole.

`pack` lays the sequences of one batched call out as row i = [pad, kept_i | pad, new_i]: the kept
part right-aligned at the cache's length C (the columns `generate` does not feed again), the new
tokens right-aligned at the end, so every row's last prompt token is in the last column as with plain
left padding. The attention mask hides both pads and `generate` derives position ids from the
mask's cumulative sum, so each token attends to exactly its own sequence at its own positions: the
same keys, values and logits as a prefill of the whole prompt, up to float rounding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterable, List, Optional, Sequence, Tuple

import torch

from orchestra_ray.config import RolloutConfig
from orchestra_ray.policy.preallocated_cache import PreallocatedLayer, preallocated_cache

KV_CACHE_TOKENS = RolloutConfig.kv_cache_max_tokens


@dataclass
class Kept:
    tokens: List[int]  # the ids whose keys and values `layers` holds, in order
    layers: List[Tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (kv_heads, len(tokens), head_dim)


def plain_dynamic_cache(model) -> bool:
    """Whether the model's cache is transformers' DynamicCache of full-attention layers alone, the
    layout `pack` builds (sliding-window, linear-attention or older caches are prefilled whole)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        layers = DynamicCache(config=model.config).layers
    except Exception:  # an older transformers, a model without a text config
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def cache_field() -> str:
    """`generate`'s name for the cache (both argument and output): `cache` in transformers >= 5.2x."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


class SequenceCache:
    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.kept: "OrderedDict[Hashable, Kept]" = OrderedDict()  # least recently stored first
        self.tokens = 0
        self.epoch = 0  # advanced by `clear`
        self.lock = threading.Lock()

    def continues(self, seq_id: Hashable, prompt: List[int]) -> bool:
        """Whether `prompt` extends the tokens kept for `seq_id` by at least one token."""
        kept = self.kept.get(seq_id)
        return kept is not None and len(kept.tokens) < len(prompt) and prompt[: len(kept.tokens)] == kept.tokens

    def take(self, seq_id: Hashable, prompt: List[int]) -> Optional[Kept]:
        """The kept cache of `seq_id`, removed from the store, if `prompt` continues it; else None (and
        the stale entry is gone)."""
        with self.lock:
            ok = self.continues(seq_id, prompt)
            kept = self.kept.pop(seq_id, None)
            if kept is not None:
                self.tokens -= len(kept.tokens)
        return kept if ok else None

    def put(self, seq_id: Hashable, kept: Kept, epoch: int) -> None:
        """Keep `kept` for `seq_id`, unless the weights changed since `epoch` was read; evicts the least
        recently stored sequences beyond `max_tokens`."""
        with self.lock:
            if epoch != self.epoch or len(kept.tokens) > self.max_tokens:
                return
            old = self.kept.pop(seq_id, None)
            self.tokens += len(kept.tokens) - (len(old.tokens) if old is not None else 0)
            self.kept[seq_id] = kept
            while self.tokens > self.max_tokens:
                _, evicted = self.kept.popitem(last=False)
                self.tokens -= len(evicted.tokens)

    def release(self, seq_ids: Iterable[Hashable]) -> None:
        with self.lock:
            for s in seq_ids:
                kept = self.kept.pop(s, None)
                if kept is not None:
                    self.tokens -= len(kept.tokens)

    def clear(self) -> None:
        with self.lock:
            self.epoch += 1
            self.kept.clear()
            self.tokens = 0


def pack(prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]], pad_token_id: int, device, reserve: Optional[int] = None):
    """(input_ids, attention_mask, cache or None) of one batched call; without kept sequences it is
    plain left padding and no cache. With `reserve` the cache's layers are `PreallocatedLayer`s with
    room for `reserve` positions past the prompt columns (the kept columns are written into their
    buffers directly)."""
    c_max = max((len(k.tokens) for k in kept if k is not None), default=0)
    new = [p[len(k.tokens):] if k is not None else p for p, k in zip(prompts, kept)]
    n_max = max(len(x) for x in new)
    ids = torch.full((len(prompts), c_max + n_max), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), c_max + n_max), dtype=torch.long)
    for i, (p, k) in enumerate(zip(prompts, kept)):
        c = len(p) - len(new[i])
        ids[i, c_max - c: c_max] = torch.tensor(p[:c], dtype=torch.long)
        mask[i, c_max - c: c_max] = 1
        ids[i, c_max + n_max - len(new[i]):] = torch.tensor(new[i], dtype=torch.long)
        mask[i, c_max + n_max - len(new[i]):] = 1
    if c_max == 0:
        return ids.to(device), mask.to(device), None
    from transformers.cache_utils import DynamicCache

    some = next(k for k in kept if k is not None)
    layers = []
    for layer, (k0, _) in enumerate(some.layers):
        keys = k0.new_empty((len(prompts), k0.shape[0], c_max if reserve is None else c_max + n_max + reserve, k0.shape[2]))
        values = torch.empty_like(keys)
        keys[:, :, :c_max] = 0  # masked padding, but never uninitialised memory (NaN * 0 is NaN)
        values[:, :, :c_max] = 0
        for i, k in enumerate(kept):
            if k is not None and k.tokens:
                keys[i, :, c_max - len(k.tokens): c_max] = k.layers[layer][0]
                values[i, :, c_max - len(k.tokens): c_max] = k.layers[layer][1]
        layers.append((keys, values) if reserve is None else PreallocatedLayer.holding(keys, values, c_max))
    return ids.to(device), mask.to(device), DynamicCache(layers) if reserve is None else preallocated_cache(layers)


def unpack(cache, mask: torch.Tensor, prompts: Sequence[List[int]], generated: Sequence[List[int]]) -> List[Kept]:
    """Each row's cache after its call: the prompt's unpadded columns and its generated tokens but
    the last (never fed to the model), copied out of the batch's cache."""
    width = mask.shape[1]
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    out = []
    for i, (p, g) in enumerate(zip(prompts, generated)):
        fed = max(len(g) - 1, 0)
        if width + fed > cache.get_seq_length():
            raise RuntimeError(f"the cache holds {cache.get_seq_length()} positions, row {i} needs {width + fed}")
        idx = torch.cat([mask[i].nonzero().squeeze(-1), torch.arange(width, width + fed, device=mask.device)])
        idx = idx.to(layers[0][0].device)
        out.append(Kept(list(p) + list(g[:fed]), [(k[i][:, idx], v[i][:, idx]) for k, v in layers]))
    return out
