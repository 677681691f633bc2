"""The policy loss (PPO-clip, asymmetric clipping, k3 KL, token-mean over the loss mask), checked on
its own and numerically against TRL's GRPO loss (the real `GRPOTrainer._compute_loss`)."""

from __future__ import annotations

import types
from collections import defaultdict

import pytest
import torch

from orchestra_ray.grpo.loss import masked_token_mean, policy_loss, sft_loss, token_logprobs

CLIP_LOW, CLIP_HIGH = 0.2, 0.28


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# token_logprobs


def test_token_logprobs_alignment_and_values():
    torch.manual_seed(0)
    B, T, V = 2, 5, 7
    logits = torch.randn(B, T, V, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T))
    lp = token_logprobs(logits, ids)
    assert lp.shape == (B, T)
    assert torch.all(lp[:, 0] == 0)
    for b in range(B):
        for t in range(1, T):
            expected = torch.log_softmax(logits[b, t - 1].float(), -1)[ids[b, t]]
            assert lp[b, t].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert torch.all(lp[:, 1:] <= 0)


def test_token_logprobs_temperature():
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 6)
    ids = torch.randint(0, 6, (1, 4))
    lp = token_logprobs(logits, ids, temperature=0.5)
    ref = token_logprobs(logits * 2.0, ids)
    torch.testing.assert_close(lp, ref)
    assert not torch.allclose(lp, token_logprobs(logits, ids))
    # temperature 1.0 (and 0, meaning "no scaling") leave the logits as they are
    torch.testing.assert_close(token_logprobs(logits, ids, temperature=1.0), token_logprobs(logits, ids))
    torch.testing.assert_close(token_logprobs(logits, ids, temperature=0.0), token_logprobs(logits, ids))


def test_token_logprobs_future_logits_do_not_matter():
    torch.manual_seed(2)
    logits = torch.randn(1, 6, 5)
    ids = torch.randint(0, 5, (1, 6))
    base = token_logprobs(logits, ids)
    changed = logits.clone()
    changed[:, 3:] += torch.randn_like(changed[:, 3:]) * 5
    out = token_logprobs(changed, ids)
    # position t depends on logits at t-1 only: positions 0..3 are unchanged
    torch.testing.assert_close(out[:, :4], base[:, :4])
    assert not torch.allclose(out[:, 4:], base[:, 4:])


# ---------------------------------------------------------------------------------------------
# policy_loss on its own


def test_on_policy_loss_is_minus_mean_advantage_and_kl_zero():
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]], dtype=torch.float64)
    adv = torch.tensor([1.5, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    out = policy_loss(lp, lp.clone(), adv, mask, lp.clone(), kl_coef=0.1)
    # ratio 1 everywhere: per token -A; token-mean over the 5 masked-in tokens
    assert out.loss.item() == pytest.approx(-(2 * 1.5 + 3 * -0.5) / 5)
    assert out.stats["kl"] == 0.0
    assert out.stats["clip_fraction"] == 0.0
    assert out.stats["ratio_mean"] == pytest.approx(1.0)


def test_kl_zero_when_ref_equals_logprobs_and_positive_otherwise():
    torch.manual_seed(3)
    lp = -torch.rand(3, 6, dtype=torch.float64) * 3
    adv = torch.zeros(3, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.float64)
    same = policy_loss(lp, lp, adv, mask, lp.clone(), kl_coef=0.5)
    assert same.stats["kl"] == 0.0
    assert same.loss.item() == 0.0
    ref = lp + torch.randn_like(lp) * 0.3
    diff = policy_loss(lp, lp, adv, mask, ref, kl_coef=0.5)
    assert diff.stats["kl"] > 0
    # k3 = exp(d) - d - 1 with d = ref - logprobs, token-mean, times beta
    d = ref - lp
    k3 = (torch.exp(d) - d - 1).mean()
    assert diff.stats["kl"] == pytest.approx(k3.item(), rel=1e-10)
    assert diff.loss.item() == pytest.approx(0.5 * k3.item(), rel=1e-10)
    # each token's KL is >= 0, so also when ref is below or above
    for shift in (-2.0, -0.01, 0.01, 2.0):
        o = policy_loss(lp, lp, adv, mask, lp + shift, kl_coef=1.0)
        assert o.stats["kl"] > 0 and o.loss.item() > 0


def test_kl_off_when_coef_zero_or_no_ref():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-3.0, -0.1]])
    adv = torch.tensor([0.0])
    mask = torch.ones(1, 2)
    assert policy_loss(lp, lp, adv, mask, ref, kl_coef=0.0).loss.item() == 0.0
    assert policy_loss(lp, lp, adv, mask, None, kl_coef=1.0).loss.item() == 0.0


def test_masked_tokens_do_not_affect_loss_or_gradient():
    torch.manual_seed(4)
    B, T = 3, 8
    old = -torch.rand(B, T, dtype=torch.float64) * 2
    lp = old + torch.randn(B, T, dtype=torch.float64) * 0.4
    ref = old + torch.randn(B, T, dtype=torch.float64) * 0.2
    adv = torch.tensor([1.0, -0.7, 0.3], dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[0, 2:5] = 0  # e.g. tool-output tokens inside the completion
    mask[1, :3] = 0  # prompt tokens
    mask[2, -2:] = 0  # padding

    x1 = _leaf(lp)
    out1 = policy_loss(x1, old, adv, mask, ref, kl_coef=0.05)
    out1.loss.backward()

    # Garbage in every masked position: the loss and the gradient stay the same.
    lp2 = torch.where(mask.bool(), lp, torch.full_like(lp, -30.0))
    old2 = torch.where(mask.bool(), old, torch.full_like(old, 5.0))
    ref2 = torch.where(mask.bool(), ref, torch.full_like(ref, 3.0))
    x2 = _leaf(lp2)
    out2 = policy_loss(x2, old2, adv, mask, ref2, kl_coef=0.05)
    out2.loss.backward()

    assert out2.loss.item() == pytest.approx(out1.loss.item(), rel=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad)
    assert torch.all(x1.grad[mask == 0] == 0)
    assert torch.all(x1.grad[mask == 1] != 0)
    assert out1.stats == pytest.approx(out2.stats)


def test_token_mean_is_over_all_policy_tokens_of_the_batch():
    # one sequence with 1 token, one with 3: token-mean weighs tokens equally (not sequences)
    lp = torch.zeros(2, 3, dtype=torch.float64)
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.float64)
    out = policy_loss(lp, lp, adv, mask, None)
    assert out.loss.item() == pytest.approx(-(2.0 - 3.0) / 4)  # sequence-mean would be -(2 - 1)/2


def test_token_count_shares_the_denominator_for_gradient_accumulation():
    torch.manual_seed(5)
    old = -torch.rand(4, 6, dtype=torch.float64)
    lp = old + 0.1 * torch.randn(4, 6, dtype=torch.float64)
    ref = old.clone()
    adv = torch.randn(4, dtype=torch.float64)
    mask = (torch.rand(4, 6) > 0.3).double()
    mask[:, 0] = 1
    x = _leaf(lp)
    full = policy_loss(x, old, adv, mask, ref, kl_coef=0.01)
    full.loss.backward()
    n = mask.sum().item()
    xa = _leaf(lp)
    total = 0.0
    for sl in (slice(0, 1), slice(1, 4)):
        part = policy_loss(xa[sl], old[sl], adv[sl], mask[sl], ref[sl], kl_coef=0.01, token_count=n)
        part.loss.backward()
        total += part.loss.item()
    assert total == pytest.approx(full.loss.item(), rel=1e-12)
    torch.testing.assert_close(xa.grad, x.grad)


def _single_token_grad(ratio: float, adv: float):
    old = torch.zeros(1, 1, dtype=torch.float64)
    x = _leaf(torch.log(torch.tensor([[ratio]], dtype=torch.float64)))
    out = policy_loss(x, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64),
                      None, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
    out.loss.backward()
    return out, x.grad.item()


@pytest.mark.parametrize(
    "ratio, adv, clipped",
    [
        (1.0 + CLIP_HIGH + 0.05, 1.0, True),  # too high with A > 0: no further push up
        (1.0 - CLIP_LOW - 0.05, -1.0, True),  # too low with A < 0: no further push down
        (1.0 + CLIP_HIGH - 0.05, 1.0, False),  # inside (asymmetric: 1.23 > 1 + clip_low)
        (1.0 - CLIP_LOW + 0.05, -1.0, False),  # inside
        (1.0 + CLIP_HIGH + 0.05, -1.0, False),  # outside but against the advantage: still trained
        (1.0 - CLIP_LOW - 0.05, 1.0, False),  # outside but against the advantage: still trained
        (1.25, 1.0, False),  # between 1 + clip_low and 1 + clip_high: shows the asymmetry
    ],
)
def test_clipping_zeroes_gradient_only_in_the_direction_of_the_advantage(ratio, adv, clipped):
    out, g = _single_token_grad(ratio, adv)
    if clipped:
        assert g == 0.0
        bound = 1.0 + CLIP_HIGH if adv > 0 else 1.0 - CLIP_LOW
        assert out.loss.item() == pytest.approx(-bound * adv)
        assert out.stats["clip_fraction"] == 1.0
    else:
        # d(-ratio * A)/d logprob = -ratio * A
        assert g == pytest.approx(-ratio * adv)
        assert out.loss.item() == pytest.approx(-ratio * adv)
        assert out.stats["clip_fraction"] == 0.0


def test_clip_bounds_are_the_configured_ones():
    # Just outside 1 + clip_high with A > 0: clipped; just inside: not.
    _, g_out = _single_token_grad(1.0 + CLIP_HIGH + 1e-6, 1.0)
    _, g_in = _single_token_grad(1.0 + CLIP_HIGH - 1e-6, 1.0)
    assert g_out == 0.0 and g_in != 0.0
    _, g_out = _single_token_grad(1.0 - CLIP_LOW - 1e-6, -1.0)
    _, g_in = _single_token_grad(1.0 - CLIP_LOW + 1e-6, -1.0)
    assert g_out == 0.0 and g_in != 0.0


def test_per_token_advantages_are_accepted():
    lp = torch.zeros(1, 3, dtype=torch.float64)
    adv_bt = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    out = policy_loss(lp, lp, adv_bt, torch.ones(1, 3, dtype=torch.float64), None)
    assert out.loss.item() == pytest.approx(-2.0)


def test_all_masked_batch_gives_zero_not_nan():
    lp = torch.zeros(2, 3)
    out = policy_loss(lp, lp, torch.ones(2), torch.zeros(2, 3), lp)
    assert out.loss.item() == 0.0


def test_masked_token_mean_and_sft_loss():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert masked_token_mean(x, m).item() == pytest.approx(10.0 / 3)
    assert masked_token_mean(x, m, denom=5.0).item() == pytest.approx(2.0)
    lp = torch.tensor([[-1.0, -9.0, -2.0]])
    assert sft_loss(lp, torch.tensor([[1, 0, 1]])).item() == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------
# Numerical cross-check against TRL's GRPO loss.
#
# `GRPOTrainer._compute_loss(self, model, inputs)` is called unbound with a stand-in `self` that
# carries only the attributes the method reads, and a `_get_per_token_logps_and_entropies` that
# returns our per-token log-probs (a leaf tensor, so gradients can be compared). loss_type "dapo"
# is TRL's token-mean over all tokens of the batch: it divides the masked sum by
# inputs["num_items_in_batch"] / num_processes * grad_accum_steps / steps_per_generation, which we
# set to the mask sum with 1 process, 1 accumulation step and 1 step per generation.

def _trl_self(per_token_logps, beta, eps_low, eps_high):
    def get_logps(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        assert logits_to_keep == per_token_logps.shape[1]
        return per_token_logps, torch.zeros_like(per_token_logps), None

    accelerator = types.SimpleNamespace(
        num_processes=1,
        sync_gradients=True,
        gather=lambda t: t.reshape(-1) if t.dim() == 0 else t,
        gather_for_metrics=lambda t: t,
        reduce=lambda t, reduction="sum": t,
    )
    args = types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1)
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=get_logps,
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type="dapo",
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=args,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=accelerator,
        _entropy_bonus_enabled=False,
        use_adaptive_entropy=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )


def _trl_loss(lp, old, adv, completion_mask, ref, beta, tool_mask=None):
    from trl import GRPOTrainer  # a test dependency: `make test` installs it

    x = _leaf(lp)
    fake = _trl_self(x, beta, CLIP_LOW, CLIP_HIGH)
    B, T = lp.shape
    mask = completion_mask if tool_mask is None else completion_mask * tool_mask
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": completion_mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    if tool_mask is not None:
        inputs["tool_mask"] = tool_mask
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    loss.backward()
    return loss.detach(), x.grad, fake._metrics["train"]


def _ours(lp, old, adv, mask, ref, beta):
    x = _leaf(lp)
    out = policy_loss(x, old, adv, mask, ref, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, kl_coef=beta)
    out.loss.backward()
    return out.loss.detach(), x.grad, out.stats


def _random_batch(seed, B=6, T=10, spread=0.5):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    # log-ratios wide enough that many ratios fall outside [0.8, 1.28], on both sides
    lp = old + torch.randn(B, T, generator=g, dtype=torch.float64) * spread
    ref = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    completion_mask = (torch.rand(B, T, generator=g) > 0.25).long()
    completion_mask[:, 0] = 1
    return lp, old, adv, completion_mask, ref


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("beta", [0.0, 1e-4, 0.2])
def test_matches_trl_grpo_loss_and_gradient(seed, beta):
    lp, old, adv, cmask, ref = _random_batch(seed)
    ratio = torch.exp(lp - old)[cmask.bool()]
    # the batch really exercises both clip bounds and the inside region
    assert (ratio > 1 + CLIP_HIGH).any() and (ratio < 1 - CLIP_LOW).any()
    assert ((ratio > 1 - CLIP_LOW) & (ratio < 1 + CLIP_HIGH)).any()

    trl_loss, trl_grad, metrics = _trl_loss(lp, old, adv, cmask, ref, beta)
    our_loss, our_grad, stats = _ours(lp, old, adv, cmask.to(lp.dtype), ref, beta)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-5, atol=1e-10)
    assert torch.all(our_grad[cmask == 0] == 0)
    if beta != 0.0:
        assert stats["kl"] == pytest.approx(metrics["kl"][-1], rel=1e-5)
    # TRL's clip ratio counts tokens whose ratio is clipped in the direction of the advantage;
    # ours counts tokens where the clipped term is the smaller one: the same set.
    assert stats["clip_fraction"] == pytest.approx(metrics["clip_ratio/region_mean"][-1], rel=1e-5)


@pytest.mark.parametrize("seed", [10, 11])
def test_matches_trl_with_tool_mask(seed):
    lp, old, adv, cmask, ref = _random_batch(seed, B=4, T=12)
    g = torch.Generator().manual_seed(seed + 100)
    tool_mask = torch.ones_like(cmask)
    for b in range(lp.shape[0]):  # a tool-output span in the middle of each completion
        s = int(torch.randint(1, 6, (1,), generator=g))
        tool_mask[b, s : s + 4] = 0
    trl_loss, trl_grad, _ = _trl_loss(lp, old, adv, cmask, ref, 0.05, tool_mask=tool_mask)
    our_loss, our_grad, _ = _ours(lp, old, adv, (cmask * tool_mask).to(lp.dtype), ref, 0.05)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-5, atol=1e-10)
    assert torch.all(our_grad[tool_mask == 0] == 0)


def test_trl_cross_check_can_fail():
    """Guard against a vacuous cross-check: a different clip bound must give a different loss."""
    lp, old, adv, cmask, ref = _random_batch(0)
    trl_loss, _, _ = _trl_loss(lp, old, adv, cmask, ref, 0.0)
    x = _leaf(lp)
    wrong = policy_loss(x, old, adv, cmask.double(), ref, clip_low=CLIP_LOW, clip_high=CLIP_LOW, kl_coef=0.0)
    assert not torch.allclose(wrong.loss.detach(), trl_loss, rtol=1e-5)
