"""Each distinct prompt of a generate call prefilled once, and the prefix all of them share (a family's
system prompt) once before them.

GRPO samples G completions of each task, so a batch's first-turn prompts come in groups of identical
token ids. Rows that have no kept cache and share their prompt with another row get the keys and
values of their prompt but its last token from ONE forward pass over the distinct prompts, handed to
`kv_cache.pack` as if kept (`Kept(prompt[:-1], ...)`): the batch's prefill then feeds each such row
only its last token, whose logits start the generation. The pass is left-padded with the position
ids `generate` derives from the mask (its cumulative sum), so the keys and values are those of a
whole prefill, up to float rounding, and sampling draws the same random numbers for the same rows.
Nothing of it is stored in the `SequenceCache`: each row's cache after the call is stored as before.

Before that pass, the prefix every such row shares (the system prompt, most of a first turn's
tokens) is prefilled once, alone, and stands as each row's kept cache: the distinct prompts' pass
and the batch's prefill are fed from its end.

A batch's prefill feeds every row as many columns as its longest new part, so a long unique prompt
left in it would undo the saving: unique prompts join the pass when that feeds fewer positions.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from orchestra_ray.grpo.packing import shared_prefix
from orchestra_ray.policy.kv_cache import Kept, cache_field, pack


def share_prefill(model, prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]], pad_token_id: int,
                  device) -> List[Optional[Kept]]:
    """`kept` with the rows that have none given the prefix all of them share (`common_prefix`:
    a family's system prompt), prefilled once, and then the rows of `plan`'s groups their prompt's
    prefix cache, one per distinct prompt."""
    kept = list(kept)
    base = common_prefix(model, prompts, kept, pad_token_id, device)
    if base is not None:
        kept = [base if k is None and len(p) >= 2 else k for p, k in zip(prompts, kept)]
    groups = plan(prompts, kept, base)
    if groups:
        for rows, k in zip(groups, prefill(model, [prompts[g[0]] for g in groups], pad_token_id, device, base)):
            for i in rows:
                kept[i] = k
    return kept


def shared_length(prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]]) -> int:
    """How many leading tokens the rows without a kept cache share, each keeping two of its own
    (one for a group's pass, one for the batch's); 0 unless two or more such rows have different
    prompts (identical ones are `plan`'s groups) and share at least two tokens."""
    free = [p for p, k in zip(prompts, kept) if k is None and len(p) >= 2]
    if len({tuple(p) for p in free}) < 2:
        return 0
    return shared_prefix(free, own=2)


def common_prefix(model, prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]], pad_token_id: int,
                  device) -> Optional[Kept]:
    """The keys and values of `shared_length`'s prefix, from one forward pass over it; None when
    there is none."""
    c = shared_length(prompts, kept)
    if not c:
        return None
    prefix = list(prompts[next(i for i, k in enumerate(kept) if k is None and len(prompts[i]) >= 2)][:c])
    return prefill(model, [prefix + [pad_token_id]], pad_token_id, device)[0]  # all but the (stand-in) last token


def plan(prompts: Sequence[List[int]], kept: Sequence[Optional[Kept]], base: Optional[Kept] = None) -> List[List[int]]:
    """The groups of rows (one distinct prompt each) to prefill in one pass: rows without a kept
    cache, or with only `base` (the common prefix), fed from there on; none where no two such rows
    share a prompt, or where the pass and the batch's prefill together would feed no fewer positions
    (padding included) than the batch's prefill alone."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    skip = len(base.tokens) if base is not None else 0
    other = 1  # the longest new part of the rows left to the batch's prefill
    for i, (p, k) in enumerate(zip(prompts, kept)):
        if (k is None or k is base) and len(p) >= 2 + (skip if k is base else 0):
            groups.setdefault(tuple(p), []).append(i)
        else:
            other = max(other, len(p) - (len(k.tokens) if k is not None else 0))
    chosen = [g for g in groups.values() if len(g) > 1]
    if not chosen:
        return []
    new = lambda g: len(prompts[g[0]]) - (skip if kept[g[0]] is base else 0)  # noqa: E731
    unique = sorted((g for g in groups.values() if len(g) == 1), key=lambda g: -new(g))
    rows = len(prompts)
    whole = rows * max([other] + [new(g) for g in groups.values()])
    best, best_cost = None, whole
    width = max(new(g) for g in chosen) - 1
    for n in range(len(unique) + 1):  # the n longest unique prompts join the pass
        if n:
            width = max(width, new(unique[n - 1]) - 1)
        left = new(unique[n]) if n < len(unique) else 1
        cost = (len(chosen) + n) * width + rows * max(other, left)
        if cost < best_cost:
            best, best_cost = n, cost
    return [] if best is None else chosen + unique[:best]


def prefill(model, prompts: Sequence[List[int]], pad_token_id: int, device, base: Optional[Kept] = None) -> List[Kept]:
    """Each prompt's keys and values but its last token's, from one left-padded forward pass (fed
    from the end of `base`, the prefix every prompt starts with, when given)."""
    prefixes = [list(p[:-1]) for p in prompts]
    ids, mask, cache = pack(prefixes, [base] * len(prefixes), pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as `generate` derives them
    fed = len(base.tokens) if base is not None else 0
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    past = {} if cache is None else {cache_field(): cache}
    with torch.no_grad():
        out = model(input_ids=ids[:, fed:], attention_mask=mask, position_ids=positions[:, fed:], use_cache=True,
                    **past, **last)
    layers = [(layer.keys, layer.values) for layer in getattr(out, cache_field()).layers]
    # the pass's cache without its padding columns; `pack` copies them into the batch's cache
    kept = []
    for i, x in enumerate(prefixes):
        idx = mask[i].nonzero().squeeze(-1).to(layers[0][0].device)
        kept.append(Kept(x, [(k[i][:, idx], v[i][:, idx]) for k, v in layers]))
    return kept
