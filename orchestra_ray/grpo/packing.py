"""Padding-free micro-batches: several sequences concatenated into one row, each one's position ids
restarting at 0, so that no compute goes to padding.

Attention stays within each sequence through transformers' packed-sequence support: a forward pass
given `position_ids` and no attention mask (and no KV cache) finds where each sequence starts from
the positions that restart and makes the causal mask block-diagonal (eager attention), and the
sequences' bounds (`cu_seq_lens_*`, flash-attention's names) go to the attention function:
flash_attention_2 runs its variable-length kernel on them, and sdpa (`sequence_sdpa` below) runs
causal attention on each sequence apart, since PyTorch's CPU kernel would otherwise compute the
whole row's square of scores under the block-diagonal mask. Models that build their masks elsewhere
(not through transformers' `create_causal_mask`) need padded micro-batches
(`trainer.max_tokens_per_micro_batch: 0`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

_sdpa = None  # transformers' own sdpa attention, which `sequence_sdpa` stands in front of


@dataclass
class PackedRow:
    """One packed row and where its log-probs go: `ids` and `position_ids` are (1, total tokens);
    the wanted positions (a target token predicted by the one before it) are `flat` in the row and
    (`rows`, `cols`) in the right-padded (sequences, longest) layout the callers use."""

    ids: torch.Tensor
    position_ids: torch.Tensor
    flat: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    shape: Tuple[int, int]
    bounds: torch.Tensor  # int32 (sequences + 1): where each sequence starts in the row, then its end

    def to(self, device) -> "PackedRow":
        return PackedRow(self.ids.to(device), self.position_ids.to(device), self.flat.to(device), self.rows.to(device),
                         self.cols.to(device), self.shape, self.bounds.to(device))

    def attention_kwargs(self) -> Dict:
        """The forward pass's keyword arguments that confine attention to each sequence."""
        longest = self.shape[1]
        return {"position_ids": self.position_ids, "use_cache": False, "cu_seq_lens_q": self.bounds,
                "cu_seq_lens_k": self.bounds, "max_length_q": longest, "max_length_k": longest}


def pack_row(token_ids: Sequence[Sequence[int]], masks: Optional[Sequence[Sequence[int]]] = None) -> PackedRow:
    """`token_ids` as one packed row; wanted are every position but each sequence's first, or with
    `masks` those whose mask is 1 (the policy's tokens)."""
    lengths = [len(t) for t in token_ids]
    if min(lengths, default=0) < 1:
        raise ValueError("a packed micro-batch needs sequences of at least one token")
    ids = torch.tensor([t for seq in token_ids for t in seq], dtype=torch.long).unsqueeze(0)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    want = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        want[i, :n] = True if masks is None else torch.as_tensor(list(masks[i]), dtype=torch.bool)
    want[:, 0] = False  # nothing predicts the first token
    rows, cols = want.nonzero(as_tuple=True)
    bounds = torch.tensor([0] + lengths).cumsum(0)
    return PackedRow(ids, position_ids, bounds[rows] + cols, rows, cols, (len(lengths), max(lengths)),
                     bounds.to(torch.int32))


def sequence_sdpa(module, query, key, value, attention_mask, cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    """transformers' sdpa attention, on each packed sequence apart (causal, no mask) when the call
    carries their bounds; otherwise transformers' own, unchanged."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        return _sdpa(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("max_length_q", "max_length_k")}
    b = cu_seq_lens_q.tolist()
    parts = [_sdpa(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, is_causal=True, **kwargs)[0]
             for s, e in zip(b, b[1:])]
    return torch.cat(parts, dim=1), None


def install_sequence_sdpa() -> None:
    """Puts `sequence_sdpa` in front of transformers' sdpa attention in this process (once): calls
    without sequence bounds, every call transformers itself makes, are passed through unchanged."""
    global _sdpa
    if _sdpa is None:
        from transformers import AttentionInterface

        _sdpa = AttentionInterface._global_mapping["sdpa"]
        AttentionInterface.register("sdpa", sequence_sdpa)
