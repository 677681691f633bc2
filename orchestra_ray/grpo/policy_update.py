"""Gradient steps on a policy: the PPO-clip + KL update of GRPO and the supervised warm start.

Plain tensors and lists in; the learner actor only wraps these with a model and an optimizer.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from orchestra_ray.errors import NonFiniteUpdate
from orchestra_ray.grpo.loss import policy_loss, sft_loss, target_logprobs, token_logprobs
from orchestra_ray.grpo.packing import install_sequence_sdpa, pack_row, prefix_groups, row_prefix
from orchestra_ray.grpo.shares import rank_micro_batches
from orchestra_ray.policy.sharding import PositionLogits, split_head
from orchestra_ray.rollout.sample import TrainBatch


def pad_right(rows: Sequence[Sequence[float]], value, dtype) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=dtype)
    return out


def compute_device(model) -> torch.device:
    """Where a model's inputs go: its parameters' device, or a sharded root's compute device
    (its shards may be offloaded to the host)."""
    return getattr(model, "compute_device", None) or next(model.parameters()).device


def sequence_logprobs(model, token_ids: Sequence[Sequence[int]], temperature: float = 1.0, pad_id: int = 0,
                      masks: Optional[Sequence[Sequence[int]]] = None, packed: bool = False) -> torch.Tensor:
    """Per-token log-probs (batch, width) of right-padded sequences; position 0 and padding get 0.

    With `masks`, only positions whose mask is 1 are computed (the others get 0): the output
    projection and softmax over the vocabulary run on those positions alone, not on every prompt
    and tool-output token, which is most of an episode. With `packed` the model runs on the
    sequences concatenated into one row (grpo/packing.py), no padding; the output is the same."""
    if packed:
        return _packed_logprobs(model, token_ids, temperature, masks)
    ids = pad_right(token_ids, pad_id, torch.long)
    attn = pad_right([[1] * len(t) for t in token_ids], 0, torch.long)
    device = compute_device(model)
    ids, attn = ids.to(device), attn.to(device)
    sharded = isinstance(model, PositionLogits)
    split = split_head(model) if masks is not None and not sharded else None
    if split is None and not sharded:
        logits = model(input_ids=ids, attention_mask=attn).logits
        return token_logprobs(logits, ids, temperature) * attn
    want = attn.bool()
    if masks is not None:
        want &= pad_right(masks, 0, torch.long).to(device).bool()
    want[:, 0] = False  # nothing predicts the first token
    rows, cols = want.nonzero(as_tuple=True)
    if sharded:
        logits = model(ids, attn, rows, cols)
    else:
        decoder, head = split
        hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
        logits = head(hidden[rows, cols - 1])  # position t is predicted from t-1
    picked = target_logprobs(logits, ids[rows, cols], temperature)
    out = torch.zeros(ids.shape, dtype=picked.dtype, device=device)
    return out.index_put((rows, cols), picked)


def shares_prompts(model) -> bool:
    """Whether packed rows hold a group's shared prompt once: where attention runs through
    `grpo.packing.sequence_sdpa` (flash-attention's varlen kernel takes whole sequences only)."""
    lm = model.lm if isinstance(model, PositionLogits) else model
    return getattr(getattr(lm, "config", None), "_attn_implementation", None) == "sdpa"


def _micro_batches(model, token_ids, masks, rows, micro_batch_size, rank, world, max_tokens) -> List[List[int]]:
    """`rank_micro_batches` of `rows`, packed with each group's prompt and the prefix all rows share
    counted once per packed row (`pack_row` holds them once)."""
    lengths = [len(token_ids[i]) for i in rows]
    groups = shared = None
    common = 0
    if max_tokens > 0 and shares_prompts(model):
        seqs = [token_ids[i] for i in rows]
        groups, shared = prefix_groups(seqs, None if masks is None else [masks[i] for i in rows])
        common = row_prefix(seqs)
    return rank_micro_batches(rows, lengths, micro_batch_size, rank, world, max_tokens, groups, shared, common)


def _packed_logprobs(model, token_ids, temperature, masks) -> torch.Tensor:
    """`sequence_logprobs` of one packed row: position ids restart at each sequence, no attention
    mask and no KV cache (which would hide the restarts from transformers' mask), the sequences'
    bounds passed to the attention function: attention stays within each sequence (grpo/packing.py)."""
    install_sequence_sdpa()
    p = pack_row(token_ids, masks, shares_prompts(model)).to(compute_device(model))
    kw = p.attention_kwargs()
    if isinstance(model, PositionLogits):
        logits = model(p.ids, None, torch.zeros_like(p.pred), p.pred + 1, **kw)
    elif (split := split_head(model)) is not None:
        decoder, head = split
        hidden = decoder(input_ids=p.ids, **kw).last_hidden_state
        logits = head(hidden[0, p.pred])
    else:
        logits = model(input_ids=p.ids, **kw).logits[0, p.pred]
    picked = target_logprobs(logits, p.target, temperature)
    out = torch.zeros(p.shape, dtype=picked.dtype, device=p.ids.device)
    return out.index_put((p.rows, p.cols), picked)


@torch.no_grad()
def reference_logprobs(model, token_ids: Sequence[Sequence[int]], micro_batch_size: int, temperature: float = 1.0,
                       masks: Optional[Sequence[Sequence[int]]] = None, rank: int = 0,
                       world: int = 1, max_tokens: int = 0) -> Dict[int, List[float]]:
    """Log-probs per token (0 where `masks`, when given, is 0: only policy tokens need them), by
    batch index: all of them at world size 1, this rank's token-balanced share otherwise. Micro-batches
    are `micro_batch_size` padded sequences, or with `max_tokens` > 0 packed rows of that many tokens."""
    out: Dict[int, List[float]] = {}
    lengths = [len(t) for t in token_ids]
    for rows in _micro_batches(model, token_ids, masks, list(range(len(token_ids))), micro_batch_size, rank, world,
                               max_tokens):
        real = bool(rows)
        rows = rows or [0]  # an empty micro-batch still takes part in the collectives
        lp = sequence_logprobs(model, [token_ids[i] for i in rows], temperature,
                               masks=None if masks is None else [masks[i] for i in rows], packed=max_tokens > 0).cpu()
        if real:
            out.update((i, lp[j, : lengths[i]].tolist()) for j, i in enumerate(rows))
    return out


def check_finite(optimizer, grad_norm, loss: float, what: str) -> None:
    """Before an optimizer step: a non-finite gradient norm (the sum over every rank's gradients, so
    all ranks agree) or loss stops the update, its gradients dropped, the weights untouched."""
    norm = float(grad_norm)
    if not (math.isfinite(norm) and math.isfinite(loss)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteUpdate(f"a {what} optimizer step was not applied: its loss ({loss:.4g}) or gradient norm "
                              f"({norm:.4g}) is not finite; the weights are as after the last finite step (a smaller "
                              f"trainer.lr or trainer.kl_coef, or trainer.max_grad_norm, may help)")


def grpo_update(
    model,
    optimizer,
    batch: TrainBatch,
    ref_logprobs: Optional[Sequence[Sequence[float]]],
    *,
    clip_low: float,
    clip_high: float,
    kl_coef: float,
    max_grad_norm: float,
    epochs: int = 1,
    mini_batches: int = 1,
    micro_batch_size: int = 16,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    rank: int = 0,
    world: int = 1,
    max_tokens_per_micro_batch: int = 0,
) -> Dict[str, float]:
    """PPO-clip steps over the kept samples of `batch`; its rollout log-probs are the old policy's.
    Micro-batches are `micro_batch_size` padded sequences, or with `max_tokens_per_micro_batch` > 0
    packed rows of at most that many tokens (grpo/packing.py; a longer sequence alone).
    Loss is a token-mean over each mini-batch, over the tokens of all ranks: in a learner group of
    `world` ranks this rank takes its token-balanced share of each mini-batch, the gradients are
    summed across ranks, and the update is the one a single learner takes on the whole mini-batch
    (the grpo.shares.RANK_PARTS statistics are this rank's parts of the sums)."""
    model.train()
    device = compute_device(model)
    stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "grad_norm": 0.0}
    n_updates = 0
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator).tolist() if mini_batches > 1 else list(range(len(batch)))
        per = max(1, len(batch) // mini_batches)
        for m in range(mini_batches):
            idx = order[m * per : (m + 1) * per] if m < mini_batches - 1 else order[m * per :]
            if not idx:
                continue
            tokens = float(sum(sum(batch.loss_masks[i]) for i in idx))
            if tokens == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            mb_stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0}
            for rows in _micro_batches(model, batch.token_ids, batch.loss_masks, idx, micro_batch_size, rank, world,
                                       max_tokens_per_micro_batch):
                weight = 1.0 if rows else 0.0  # an empty micro-batch: a zero-weight pass for the collectives
                rows = rows or idx[:1]
                masks = [batch.loss_masks[i] for i in rows]
                lp = sequence_logprobs(model, [batch.token_ids[i] for i in rows], temperature, masks=masks,
                                       packed=max_tokens_per_micro_batch > 0)
                mask = pad_right(masks, 0, torch.float32).to(device)
                mask[:, 0] = 0.0  # nothing predicts the first token
                old = pad_right([batch.rollout_logprobs[i] for i in rows], 0.0, torch.float32).to(device)
                ref = None
                if ref_logprobs is not None:
                    ref = pad_right([ref_logprobs[i] for i in rows], 0.0, torch.float32).to(device)
                adv = torch.tensor([batch.advantages[i] for i in rows], dtype=torch.float32, device=device)
                out = policy_loss(
                    lp, old, adv, mask, ref,
                    clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef, token_count=tokens,
                )
                (out.loss * weight).backward()
                if not weight:
                    continue
                share = float(mask.sum()) / tokens
                mb_stats["loss"] += float(out.loss.detach())
                for k in ("kl", "clip_fraction", "ratio_mean"):
                    mb_stats[k] += out.stats[k] * share
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            check_finite(optimizer, grad_norm, mb_stats["loss"], "GRPO")
            optimizer.step()
            n_updates += 1
            for k, v in mb_stats.items():
                stats[k] += v
            stats["grad_norm"] += float(grad_norm)
    model.eval()
    return {k: v / max(1, n_updates) for k, v in stats.items()} | {"optimizer_steps": float(n_updates)}


class SupervisedRun:
    """Supervised warm start on demonstrations (token_ids, loss_mask), taken a few batches at a time
    (`run`), so that the driver can show its progress between calls; `losses()`: the mean loss of
    each epoch (this rank's part of it in a learner group, which splits each batch as `grpo_update`
    does)."""

    def __init__(self, model, optimizer, samples: Sequence[dict], *, epochs: int, batch_size: int, max_grad_norm: float,
                 seed: int, rank: int = 0, world: int = 1):
        self.model, self.optimizer, self.samples = model, optimizer, samples
        self.max_grad_norm, self.rank, self.world = max_grad_norm, rank, world
        g = torch.Generator().manual_seed(seed)
        orders = [torch.randperm(len(samples), generator=g).tolist() for _ in range(epochs)]
        self.batches = [(e, order[i : i + batch_size]) for e, order in enumerate(orders) for i in range(0, len(order), batch_size)]
        self.sums, self.counts = [0.0] * epochs, [0] * epochs
        self.done = 0

    def losses(self) -> List[float]:
        return [total / max(1, count) for total, count in zip(self.sums, self.counts)]

    def run(self, n: int) -> bool:
        """The next `n` batches (fewer at the end); whether every batch has been taken."""
        samples, device = self.samples, compute_device(self.model)
        self.model.train()
        for epoch, idx in self.batches[self.done : self.done + n]:
            tokens = max(1.0, float(sum(sum(samples[j]["loss_mask"][1:]) for j in idx)))
            mine = rank_micro_batches(idx, [len(samples[j]["token_ids"]) for j in idx], len(idx), self.rank, self.world)[0]
            rows = [samples[j] for j in (mine or idx[:1])]  # an empty share: a zero-weight pass
            # one packed row where shared prefixes can be held once (every demonstration of a family
            # starts with its system prompt, most of its tokens)
            lp = sequence_logprobs(self.model, [r["token_ids"] for r in rows], masks=[r["loss_mask"] for r in rows],
                                   packed=shares_prompts(self.model))
            mask = pad_right([r["loss_mask"] for r in rows], 0, torch.float32).to(device)
            mask[:, 0] = 0.0
            loss = sft_loss(lp, mask, tokens) * (1.0 if mine else 0.0)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            check_finite(self.optimizer, grad_norm, float(loss.detach()), "warm-start")
            self.optimizer.step()
            self.sums[epoch] += float(loss.detach())
            self.counts[epoch] += 1
            self.done += 1
        self.model.eval()
        return self.done == len(self.batches)
