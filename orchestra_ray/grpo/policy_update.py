"""Gradient steps on a policy: the PPO-clip + KL update of GRPO and the supervised warm start.

Plain tensors and lists in; the learner actor only wraps these with a model and an optimizer.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from orchestra_ray.errors import NonFiniteUpdate
from orchestra_ray.grpo.loss import policy_loss, sft_loss, target_logprobs, token_logprobs
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
                      masks: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """Per-token log-probs (batch, width) of right-padded sequences; position 0 and padding get 0.

    With `masks`, only positions whose mask is 1 are computed (the others get 0): the output
    projection and softmax over the vocabulary run on those positions alone, not on every prompt
    and tool-output token, which is most of an episode."""
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


@torch.no_grad()
def reference_logprobs(model, token_ids: Sequence[Sequence[int]], micro_batch_size: int, temperature: float = 1.0,
                       masks: Optional[Sequence[Sequence[int]]] = None, rank: int = 0,
                       world: int = 1) -> Dict[int, List[float]]:
    """Log-probs per token (0 where `masks`, when given, is 0: only policy tokens need them), by
    batch index: all of them at world size 1, this rank's token-balanced share otherwise."""
    out: Dict[int, List[float]] = {}
    lengths = [len(t) for t in token_ids]
    for rows in rank_micro_batches(range(len(token_ids)), lengths, micro_batch_size, rank, world):
        real = bool(rows)
        rows = rows or [0]  # an empty micro-batch still takes part in the collectives
        lp = sequence_logprobs(model, [token_ids[i] for i in rows], temperature,
                               masks=None if masks is None else [masks[i] for i in rows]).cpu()
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
) -> Dict[str, float]:
    """PPO-clip steps over the kept samples of `batch`; its rollout log-probs are the old policy's.
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
            lengths = [len(batch.token_ids[i]) for i in idx]
            for rows in rank_micro_batches(idx, lengths, micro_batch_size, rank, world):
                weight = 1.0 if rows else 0.0  # an empty micro-batch: a zero-weight pass for the collectives
                rows = rows or idx[:1]
                masks = [batch.loss_masks[i] for i in rows]
                lp = sequence_logprobs(model, [batch.token_ids[i] for i in rows], temperature, masks=masks)
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


def sft_update(model, optimizer, samples: Sequence[dict], *, epochs: int, batch_size: int, max_grad_norm: float, seed: int,
               rank: int = 0, world: int = 1) -> List[float]:
    """Supervised warm start on demonstrations (token_ids, loss_mask); returns the loss per epoch
    (this rank's part of it in a learner group, which splits each batch as `grpo_update` does)."""
    model.train()
    device = compute_device(model)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(samples), generator=g).tolist()
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            tokens = max(1.0, float(sum(sum(samples[j]["loss_mask"][1:]) for j in idx)))
            mine = rank_micro_batches(idx, [len(samples[j]["token_ids"]) for j in idx], len(idx), rank, world)[0]
            rows = [samples[j] for j in (mine or idx[:1])]  # an empty share: a zero-weight pass
            lp = sequence_logprobs(model, [r["token_ids"] for r in rows], masks=[r["loss_mask"] for r in rows])
            mask = pad_right([r["loss_mask"] for r in rows], 0, torch.float32).to(device)
            mask[:, 0] = 0.0
            loss = sft_loss(lp, mask, tokens) * (1.0 if mine else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            check_finite(optimizer, grad_norm, float(loss.detach()), "warm-start")
            optimizer.step()
            total, count = total + float(loss.detach()), count + 1
        losses.append(total / max(1, count))
    model.eval()
    return losses
