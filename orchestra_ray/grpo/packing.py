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
from typing import Dict, List, Optional, Sequence, Tuple

import torch

_sdpa = None  # transformers' own sdpa attention, which `sequence_sdpa` stands in front of


@dataclass
class PackedRow:
    """One packed row and where its log-probs go: `ids` and `position_ids` are (1, total tokens);
    the wanted positions (a target token predicted by the one before it) are `flat` in the row and
    (`rows`, `cols`) in the right-padded (sequences, longest) layout the callers use."""

    ids: torch.Tensor
    position_ids: torch.Tensor
    pred: torch.Tensor  # where in the row each wanted token is predicted from
    target: torch.Tensor  # the wanted tokens
    rows: torch.Tensor
    cols: torch.Tensor
    shape: Tuple[int, int]
    bounds: torch.Tensor  # int32 (sequences + 1): where each sequence starts in the row, then its end
    # With shared prefixes: (start, end, then two (start, end) context spans, (0, 0) when unused) per
    # segment of the row; a segment attends causally to itself and wholly to its context, or None.
    segments: Optional[torch.Tensor] = None

    def to(self, device) -> "PackedRow":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PackedRow(move(self.ids), move(self.position_ids), move(self.pred), move(self.target), move(self.rows),
                         move(self.cols), self.shape, move(self.bounds), self.segments)

    def attention_kwargs(self) -> Dict:
        """The forward pass's keyword arguments that confine attention to each sequence."""
        if self.segments is not None:
            return {"position_ids": self.position_ids, "use_cache": False, "packed_segments": self.segments}
        longest = self.shape[1]
        return {"position_ids": self.position_ids, "use_cache": False, "cu_seq_lens_q": self.bounds,
                "cu_seq_lens_k": self.bounds, "max_length_q": longest, "max_length_k": longest}


def _first_wanted(n: int, mask: Optional[Sequence[int]]) -> int:
    if mask is None:
        return 1
    return next((c for c in range(1, n) if mask[c]), n)


def prefix_groups(token_ids: Sequence[Sequence[int]], masks: Optional[Sequence[Sequence[int]]] = None
                  ) -> Tuple[List[int], List[int]]:
    """Per sequence: its group (the sequences whose tokens before their first wanted one, the
    prompt, are the same: a GRPO group's samples) and how many leading tokens it shares with the
    rest of its group (their common prefix, but at least one token of its own; 0 when alone)."""
    keys: Dict[Tuple[int, ...], int] = {}
    group = [keys.setdefault(tuple(t[:_first_wanted(len(t), None if masks is None else masks[i])]), len(keys))
             for i, t in enumerate(token_ids)]
    members: Dict[int, List[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    shared = [0] * len(token_ids)
    for rows in members.values():
        if len(rows) < 2:
            continue
        p = shared_prefix([token_ids[i] for i in rows])
        for i in rows:
            shared[i] = p
    return group, shared


def shared_prefix(token_ids: Sequence[Sequence[int]], own: int = 1) -> int:
    """How many leading tokens all of `token_ids` have in common, each keeping at least `own` tokens
    of its own; 0 when under two."""
    first, n = token_ids[0], min(len(t) for t in token_ids) - own
    p = 0
    while p < n and all(t[p] == first[p] for t in token_ids):
        p += 1
    return p if p >= 2 else 0


def row_prefix(token_ids: Sequence[Sequence[int]]) -> int:
    """The leading tokens every sequence of a row has in common (the system prompt every task of a
    family starts with); 0 for fewer than two sequences."""
    return shared_prefix(token_ids) if len(token_ids) >= 2 else 0


def pack_row(token_ids: Sequence[Sequence[int]], masks: Optional[Sequence[Sequence[int]]] = None,
             share: bool = False) -> PackedRow:
    """`token_ids` as one packed row; wanted are every position but each sequence's first, or with
    `masks` those whose mask is 1 (the policy's tokens). With `share`, shared prefixes are held once:
    the row's common prefix (`row_prefix`) first, then per group (`prefix_groups`) the rest of its
    prompt, then each sequence's own tokens: [common, rest of prompt A, own 1, own 2, rest of prompt
    B, own 3, ...], each part at the positions it has in its sequences and attending wholly to the
    parts before it in its own sequences (its context) and causally to itself."""
    lengths = [len(t) for t in token_ids]
    if min(lengths, default=0) < 1:
        raise ValueError("a packed micro-batch needs sequences of at least one token")
    group, shared = prefix_groups(token_ids, masks) if share else (list(range(len(lengths))), [0] * len(lengths))
    common = row_prefix(token_ids) if share and len(set(group)) > 1 else 0
    ids: List[int] = []
    positions: List[int] = []
    segments: List[Tuple[int, ...]] = []  # PackedRow.segments

    def add(tokens: Sequence[int], first: int, context: List[Tuple[int, int]]) -> int:
        at = len(ids)
        spans = [x for c in context for x in c] + [0, 0] * (2 - len(context))
        segments.append((at, at + len(tokens), *spans))
        ids.extend(tokens)
        positions.extend(range(first, first + len(tokens)))
        return at

    base = [(add(token_ids[0][:common], 0, []), common)] if common else []
    own = [0] * len(lengths)  # where sequence i's own tokens begin in the sequence
    start = [0] * len(lengths)  # ... and in the row
    prompt_at: Dict[int, int] = {}  # group -> where the rest of its prompt begins in the row
    for g in dict.fromkeys(group):
        rows = [i for i in range(len(lengths)) if group[i] == g]
        p = max(shared[rows[0]], common)
        context = list(base)
        if p > common:
            prompt_at[g] = add(token_ids[rows[0]][common:p], common, base)
            context.append((prompt_at[g], prompt_at[g] + p - common))
        for i in rows:
            own[i] = p
            start[i] = add(token_ids[i][p:], p, context)
    want = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        want[i, :n] = True if masks is None else torch.as_tensor(list(masks[i]), dtype=torch.bool)
    want[:, 0] = False  # nothing predicts the first token
    rows, cols = want.nonzero(as_tuple=True)
    pred, target = [], []
    for i, c in zip(rows.tolist(), cols.tolist()):
        t = c - 1  # token t predicts token c
        pred.append(t if t < common else prompt_at[group[i]] + t - common if t < own[i] else start[i] + t - own[i])
        target.append(token_ids[i][c])
    bounds = torch.tensor([0] + lengths).cumsum(0)
    return PackedRow(torch.tensor(ids, dtype=torch.long).unsqueeze(0), torch.tensor(positions).unsqueeze(0),
                     torch.tensor(pred, dtype=torch.long), torch.tensor(target, dtype=torch.long), rows, cols,
                     (len(lengths), max(lengths)), bounds.to(torch.int32),
                     torch.tensor(segments, dtype=torch.long) if common or any(shared) else None)


def sequence_sdpa(module, query, key, value, attention_mask, cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    """transformers' sdpa attention, on each packed sequence apart (causal, no mask) when the call
    carries their bounds; otherwise transformers' own, unchanged."""
    segments = kwargs.pop("packed_segments", None)
    if segments is not None:
        return _segment_sdpa(module, query, key, value, segments, **kwargs)
    if cu_seq_lens_q is None or query.shape[0] != 1:
        return _sdpa(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("max_length_q", "max_length_k")}
    b = cu_seq_lens_q.tolist()
    parts = [_sdpa(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, is_causal=True, **kwargs)[0]
             for s, e in zip(b, b[1:])]
    return torch.cat(parts, dim=1), None


def _segment_sdpa(module, query, key, value, segments, **kwargs):
    """Attention of a row with shared prefixes: each segment causal within itself and over all of its
    context (up to two earlier spans of the row: the common prefix, its group's prompt)."""
    kwargs.pop("is_causal", None)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("max_length_q", "max_length_k", "cu_seq_lens_k")}
    parts = []
    for s, e, *spans in segments.tolist():
        context = [(a, b) for a, b in zip(spans[::2], spans[1::2]) if b > a]
        if not context:
            parts.append(_sdpa(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, is_causal=True, **kwargs)[0])
            continue
        n, c = e - s, sum(b - a for a, b in context)
        mask = torch.ones(n, c + n, dtype=torch.bool, device=query.device)
        mask[:, c:] = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
        k = torch.cat([key[:, :, a:b] for a, b in context] + [key[:, :, s:e]], dim=2)
        v = torch.cat([value[:, :, a:b] for a, b in context] + [value[:, :, s:e]], dim=2)
        parts.append(_sdpa(module, query[:, :, s:e], k, v, mask[None, None], **kwargs)[0])
    return torch.cat(parts, dim=1), None


def install_sequence_sdpa() -> None:
    """Puts `sequence_sdpa` in front of transformers' sdpa attention in this process (once): calls
    without sequence bounds, every call transformers itself makes, are passed through unchanged."""
    global _sdpa
    if _sdpa is None:
        from transformers import AttentionInterface

        _sdpa = AttentionInterface._global_mapping["sdpa"]
        AttentionInterface.register("sdpa", sequence_sdpa)
