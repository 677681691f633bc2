"""How the ranks of a learner group split a mini-batch: token-balanced shares, and micro-batches of
one count on every rank.

Under FSDP every forward and backward pass is a collective (parameters are all-gathered layer by
layer, gradients reduce-scattered), so all ranks must run the same number of passes: a rank whose
share needs fewer micro-batches runs empty ones, which the update fills with a zero-weight pass.
Plain lists in and out; every rank computes the same plan from the same batch.
"""

from __future__ import annotations

from typing import List, Sequence

# Statistics of a GRPO step that a rank returns as its part of the whole batch's (summed over
# ranks); the others (gradient norm, optimizer steps) are the same on every rank.
RANK_PARTS = ("loss", "kl", "clip_fraction", "ratio_mean")


def token_balanced_shares(lengths: Sequence[int], world: int) -> List[List[int]]:
    """Positions 0..len(lengths)-1 split into `world` shares of near-equal total length: longest
    first, each to the share with the fewest tokens so far (ties to the lower rank). Each share keeps
    the batch's order."""
    if world < 1:
        raise ValueError(f"world size must be at least 1, got {world}")
    shares: List[List[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        shares[r].append(i)
        load[r] += lengths[i]
    return [sorted(s) for s in shares]


def rank_micro_batches(rows: Sequence[int], lengths: Sequence[int], micro_batch_size: int, rank: int,
                       world: int) -> List[List[int]]:
    """This rank's micro-batches of `rows` (batch indices; `lengths` their sequence lengths, in the
    same order): its token-balanced share cut into chunks of `micro_batch_size`, then empty lists up
    to the largest count of any rank. At world size 1: `rows` in chunks, as a single learner takes them."""
    size = max(1, micro_batch_size)
    shares = [list(rows)] if world == 1 else [[rows[j] for j in s] for s in token_balanced_shares(lengths, world)]
    count = max(-(-len(s) // size) for s in shares)
    mine = shares[rank]
    chunks = [mine[i : i + size] for i in range(0, len(mine), size)]
    return chunks + [[] for _ in range(count - len(chunks))]
