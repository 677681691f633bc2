"""Each distinct prompt of a generate call prefilled once.

GRPO samples G completions of each task, so a batch's first-turn prompts come in groups of identical
token ids. Rows that have no kept cache and share their prompt with another row get the keys and
values of their prompt but its last token from ONE forward pass over the distinct prompts, handed to
`kv_cache.pack` as if kept (`Kept(prompt[:-1], ...)`): the batch's prefill then feeds each such row
only its last token, whose logits start the generation. The pass is left-padded with the position
ids `generate` derives from the mask (its cumulative sum), so the keys and values are those of a
whole prefill, up to float rounding, and sampling draws the same random numbers for the same rows.
Nothing of it is stored in the `SequenceCache`: each row's cache after the call is stored as before.

A batch's prefill feeds every row as many columns as its longest new part, so a long unique prompt
left in it would undo the saving: unique prompts join the pass when that feeds fewer positions.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from orchestra_ray.policy.kv_cache import Kept, cache_field, pack


def share_prefill(model, prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]], pad_token_id: int,
                  device) -> List[Optional[Kept]]:
    """`kept` with the rows of `plan`'s groups given their prompt's prefix cache, one per distinct prompt."""
    groups = plan(prompts, kept)
    kept = list(kept)
    if groups:
        for rows, k in zip(groups, prefill(model, [prompts[g[0]] for g in groups], pad_token_id, device)):
            for i in rows:
                kept[i] = k
    return kept


def plan(prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]]) -> List[List[int]]:
    """The groups of rows (one distinct prompt each) to prefill in one pass; none where no two rows
    without a kept cache share a prompt, or where the pass and the batch's prefill together would
    feed no fewer positions (padding included) than the batch's prefill alone."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    other = 1  # the longest new part of the rows left to the batch's prefill
    for i, (p, k) in enumerate(zip(prompts, kept)):
        if k is None and len(p) >= 2:
            groups.setdefault(tuple(p), []).append(i)
        else:
            other = max(other, len(p) - (len(k.tokens) if k is not None else 0))
    chosen = [g for g in groups.values() if len(g) > 1]
    if not chosen:
        return []
    unique = sorted((g for g in groups.values() if len(g) == 1), key=lambda g: -len(prompts[g[0]]))
    rows = len(prompts)
    whole = rows * max([other] + [len(prompts[g[0]]) for g in groups.values()])
    best, best_cost = None, whole
    width = max(len(prompts[g[0]]) for g in chosen) - 1
    for n in range(len(unique) + 1):  # the n longest unique prompts join the pass
        if n:
            width = max(width, len(prompts[unique[n - 1][0]]) - 1)
        left = len(prompts[unique[n][0]]) if n < len(unique) else 1
        cost = (len(chosen) + n) * width + rows * max(other, left)
        if cost < best_cost:
            best, best_cost = n, cost
    return [] if best is None else chosen + unique[:best]


def prefill(model, prompts: Sequence[List[int]], pad_token_id: int, device) -> List[Kept]:
    """Each prompt's keys and values but its last token's, from one left-padded forward pass."""
    prefixes = [list(p[:-1]) for p in prompts]
    ids, mask, _ = pack(prefixes, [None] * len(prefixes), pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as `generate` derives them
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last)
    layers = [(layer.keys, layer.values) for layer in getattr(out, cache_field()).layers]
    width = ids.shape[1]
    # views of the pass's cache, padding removed; `pack` copies them into the batch's cache
    return [Kept(x, [(k[i, :, width - len(x):], v[i, :, width - len(x):]) for k, v in layers])
            for i, x in enumerate(prefixes)]
