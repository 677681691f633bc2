"""A KV cache whose layers write each step's keys and values into buffers allocated once per call.

transformers' `DynamicLayer` concatenates the whole cache with the new token's keys at every decoded
step: a copy of everything cached, per layer, per token, which took about half of a CPU decode step
of SmolLM2-135M at 64 sequences of ~560 tokens (py-spy). `PreallocatedLayer` reserves room for the
call's prompt width plus `RESERVE` new tokens (or its `max_new_tokens`, if fewer), writes in place
and hands attention views of the filled part; when full it grows by `RESERVE` positions, one copy
per `RESERVE` tokens. A call whose sequences all stop early thus holds at most `RESERVE` positions
more than it used, not room for `max_new_tokens` it never generated. Everything that reads a cache
(`get_seq_length`, `unpack`, generate's masks) sees the same `keys` and `values` shapes as before.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

RESERVE = 64  # new positions a call's buffers hold at first, and add each time they are full


class PreallocatedLayer(DynamicLayer):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = max(int(capacity), 1)
        self._k: Optional[torch.Tensor] = None  # (batch, kv_heads, capacity, head_dim)
        self._v: Optional[torch.Tensor] = None
        self._n = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._k is None or self.keys is not self._view_k:  # first write, or the views were replaced (crop, select)
            self._seed(self.keys, self.values, key_states)
        n, add = self._n, key_states.shape[-2]
        if n + add > self._k.shape[-2]:
            self._grow(n + add + RESERVE)
        self._k[:, :, n : n + add] = key_states
        self._v[:, :, n : n + add] = value_states
        self._n = n + add
        self._view()
        return self.keys, self.values

    def _seed(self, keys: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> None:
        n = keys.shape[-2] if keys is not None and keys.dim() == 4 else 0
        b, h, _, d = like.shape
        self._k = like.new_empty((b, h, max(self.capacity, n + like.shape[-2]), d))
        self._v = torch.empty_like(self._k)
        if n:
            self._k[:, :, :n] = keys
            self._v[:, :, :n] = values
        self._n = n

    def _grow(self, capacity: int) -> None:
        k, v = self._k, self._v
        self._k = k.new_empty((*k.shape[:2], capacity, k.shape[-1]))
        self._v = torch.empty_like(self._k)
        self._k[:, :, : self._n] = k[:, :, : self._n]
        self._v[:, :, : self._n] = v[:, :, : self._n]

    def _view(self) -> None:
        self.keys = self._view_k = self._k[:, :, : self._n]
        self.values = self._v[:, :, : self._n]

    _view_k: Optional[torch.Tensor] = None

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, filled: int) -> "PreallocatedLayer":
        """A layer whose buffers are `keys` and `values` (batch, kv_heads, capacity, head_dim), of
        which the first `filled` positions hold the cache."""
        layer = cls(keys.shape[-2])
        layer.lazy_initialization(keys, values)
        layer._k, layer._v, layer._n = keys, values, filled
        layer._view()
        return layer


def preallocated_cache(layers: Sequence[PreallocatedLayer]) -> DynamicCache:
    """A DynamicCache of these layers, one per decoder layer; only for models whose cache is plain
    full-attention `DynamicLayer`s (`kv_cache.plain_dynamic_cache`)."""
    cache = DynamicCache()
    cache.layers, cache.layer_class_to_replicate = list(layers), None
    return cache
