"""How the ranks of a learner group split a mini-batch: token-balanced shares, and micro-batches of
one count on every rank: chunks of a number of sequences, or sequences packed up to a token budget.

Under FSDP every forward and backward pass is a collective (parameters are all-gathered layer by
layer, gradients reduce-scattered), so all ranks must run the same number of passes: a rank whose
share needs fewer micro-batches runs empty ones, which the update fills with a zero-weight pass.
Plain lists in and out; every rank computes the same plan from the same batch.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

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


def pack_by_tokens(rows: Sequence[int], lengths: Sequence[int], max_tokens: int,
                   groups: Optional[Sequence[int]] = None, shared: Optional[Sequence[int]] = None,
                   common: int = 0) -> List[List[int]]:
    """`rows` (batch indices; `lengths` their sequence lengths, in the same order) packed into bins
    of at most `max_tokens` tokens, first-fit decreasing (a sequence longer than the budget gets a
    bin of its own); each bin keeps the batch's order. With `groups` and `shared` (per row, as
    `grpo.packing.prefix_groups` gives them), a group's members are placed one after the other and
    one joining a bin that holds its group's prompt costs only its own tokens; with `common` (the
    leading tokens every row has: `grpo.packing.row_prefix`, a family's system prompt), one joining
    a bin that holds another group costs all but those (a packed row holds them once)."""
    groups = groups if groups is not None else list(range(len(rows)))
    shared = shared if shared is not None else [0] * len(rows)
    longest: Dict[int, int] = {}
    for j, g in enumerate(groups):
        longest[g] = max(longest.get(g, 0), lengths[j])
    bins: List[List[int]] = []
    load: List[int] = []
    held: List[set] = []  # the groups whose prompt each bin holds
    for j in sorted(range(len(rows)), key=lambda j: (-longest[groups[j]], groups[j], -lengths[j], j)):
        cost = [lengths[j] - (shared[j] if groups[j] in held[k] else common) for k in range(len(bins))]
        k = next((k for k in range(len(bins)) if load[k] + cost[k] <= max_tokens), len(bins))
        if k == len(bins):
            bins.append([])
            load.append(0)
            held.append(set())
            cost.append(lengths[j])
        bins[k].append(j)
        load[k] += cost[k]
        held[k].add(groups[j])
    return [[rows[j] for j in sorted(b)] for b in bins]


def rank_micro_batches(rows: Sequence[int], lengths: Sequence[int], micro_batch_size: int, rank: int,
                       world: int, max_tokens: int = 0, groups: Optional[Sequence[int]] = None,
                       shared: Optional[Sequence[int]] = None, common: int = 0) -> List[List[int]]:
    """This rank's micro-batches of `rows` (batch indices; `lengths` their sequence lengths, in the
    same order): its token-balanced share cut into chunks of `micro_batch_size`, or with `max_tokens`
    > 0 packed into bins of that many tokens (`pack_by_tokens`, given `groups`, `shared` and
    `common`), then empty lists up to the largest count of any rank. At world size 1: `rows` in chunks (or bins), as a single learner takes them."""
    size = max(1, micro_batch_size)
    pos = range(len(rows))
    shares = [list(pos)] if world == 1 else token_balanced_shares(lengths, world)

    def cut(share: List[int]) -> List[List[int]]:
        if max_tokens > 0:
            g = None if groups is None else [groups[j] for j in share]
            h = None if shared is None else [shared[j] for j in share]
            return [[rows[j] for j in b] for b in pack_by_tokens(share, [lengths[j] for j in share], max_tokens, g, h,
                                                                      common)]
        return [[rows[j] for j in share[i : i + size]] for i in range(0, len(share), size)]

    plans = [cut(s) for s in shares]  # every rank's, for the count all of them run
    count = max(len(p) for p in plans)
    return plans[rank] + [[] for _ in range(count - len(plans[rank]))]
