"""Log-probs computed at the policy's tokens only equal the full computation there, values and
gradients, on a real (tiny, random) Qwen3 model; plain torch, no Ray."""

import pytest
import torch

from orchestra_ray.grpo.policy_update import reference_logprobs, sequence_logprobs


def tiny_qwen3(seed=0):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("qwen3", vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, masks = [], []
    for n, prompt in ((23, 9), (15, 4), (31, 20)):  # lengths differ: right padding in the batch
        ids.append(torch.randint(1, 97, (n,), generator=g).tolist())
        m = [0] * prompt + [1] * (n - prompt)
        m[prompt + 3] = 0  # a tool-output token inside the episode
        masks.append(m)
    return ids, masks


def test_masked_logprobs_equal_the_full_ones_at_policy_tokens():
    model = tiny_qwen3().eval()
    ids, masks = batch()
    with torch.no_grad():
        full = sequence_logprobs(model, ids, temperature=0.7)
        part = sequence_logprobs(model, ids, temperature=0.7, masks=masks)
    want = torch.zeros_like(full)
    for i, m in enumerate(masks):
        want[i, : len(m)] = torch.tensor(m, dtype=full.dtype)
    want[:, 0] = 0
    assert torch.allclose(part, full * want, atol=1e-5)
    assert (part[want == 0] == 0).all() and (part[want == 1] != 0).all()
    ref = reference_logprobs(model, ids, micro_batch_size=2, temperature=0.7, masks=masks)
    assert sorted(ref) == list(range(len(ids))) and [len(ref[i]) for i in range(len(ids))] == [len(t) for t in ids]
    assert torch.allclose(torch.tensor(ref[2]), part[2, : len(ids[2])], atol=1e-5)


def test_masked_logprobs_give_the_same_gradient():
    ids, masks = batch(seed=2)
    grads = []
    for use_masks in (False, True):
        model = tiny_qwen3(seed=3)
        lp = sequence_logprobs(model, ids, masks=masks if use_masks else None)
        mask = torch.zeros_like(lp)
        for i, m in enumerate(masks):
            mask[i, : len(m)] = torch.tensor(m, dtype=lp.dtype)
        mask[:, 0] = 0
        (lp * mask).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-5), k


@pytest.mark.parametrize("bad", ["advantage", "kl_coef", "old_logprob"])
def test_a_non_finite_update_is_not_applied(bad):
    from orchestra_ray.errors import LearnerLost, NonFiniteUpdate
    from orchestra_ray.grpo.policy_update import grpo_update
    from orchestra_ray.rollout.sample import TrainBatch

    model = tiny_qwen3()
    ids, _ = batch()
    masks = [[0] * 3 + [1] * (len(t) - 3) for t in ids]
    old = [[0.0] * 3 + [-1.0] * (len(t) - 3) for t in ids]
    adv = [1.0, -1.0] + [0.5] * (len(ids) - 2)
    kl, ref = 0.0, None
    if bad == "advantage":
        adv[0] = float("nan")
    elif bad == "kl_coef":
        kl, ref = float("inf"), [[0.0] * len(t) for t in ids]
    else:
        old[1][-1] = float("-inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(NonFiniteUpdate, match="step was not applied.*not finite"):
        grpo_update(model, opt, TrainBatch(ids, masks, old, adv), ref, clip_low=0.2, clip_high=0.28, kl_coef=kl,
                    max_grad_norm=1.0, micro_batch_size=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the weights are as before"
    assert not opt.state and all(p.grad is None for p in model.parameters())
    assert issubclass(NonFiniteUpdate, LearnerLost)  # the run stops with one line naming the last checkpoint
