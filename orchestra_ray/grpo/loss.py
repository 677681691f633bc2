"""The policy loss: PPO-clip with asymmetric clipping, a k3 KL penalty to the reference model,
token-mean over policy tokens only (tool-output and prompt tokens have loss mask 0).

Tensors are (batch, tokens); `advantages` is (batch,) or (batch, tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch


@dataclass
class LossOutput:
    loss: torch.Tensor
    stats: Dict[str, float]


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each target token under softmax(logits / temperature), in float32 (float64 for a
    float64 model); `logits` has
    one more (vocabulary) dimension than `targets`. The one place token log-probs are computed."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of token t+1 given the prefix, aligned to position t+1 (position 0 gets 0)."""
    lp = target_logprobs(logits[:, :-1, :], input_ids[:, 1:], temperature)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)


def masked_token_mean(x: torch.Tensor, mask: torch.Tensor, denom: Optional[float] = None) -> torch.Tensor:
    total = (x * mask).sum()
    return total / (denom if denom is not None else mask.sum().clamp(min=1.0))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ref_logprobs: Optional[torch.Tensor] = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    kl_coef: float = 1e-4,
    token_count: Optional[float] = None,
) -> LossOutput:
    """PPO-clip + beta * KL, averaged over all policy tokens of the batch.

    `token_count` lets micro-batches of one optimizer step share the denominator of the whole step,
    so that gradient accumulation equals one big token-mean.
    """
    mask = loss_mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and kl_coef != 0.0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0  # k3 estimator: unbiased, always >= 0
        per_token = per_token + kl_coef * kl
    loss = masked_token_mean(per_token, mask, token_count)
    with torch.no_grad():
        clipped_frac = masked_token_mean(((ratio * advantages) > (clipped * advantages)).float(), mask)
        stats = {
            "kl": float(masked_token_mean(kl, mask)),
            "clip_fraction": float(clipped_frac),
            "ratio_mean": float(masked_token_mean(ratio, mask)),
        }
    return LossOutput(loss, stats)


def sft_loss(logprobs: torch.Tensor, loss_mask: torch.Tensor, token_count: Optional[float] = None) -> torch.Tensor:
    """Negative log-likelihood of the policy tokens, token-mean (the warm-start stage); over
    `token_count` tokens when given (a learner group's whole batch)."""
    return -masked_token_mean(logprobs, loss_mask.to(logprobs.dtype), token_count)
