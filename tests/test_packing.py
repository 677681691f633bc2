"""Packed micro-batches (several sequences in one row, position ids restarting, no padding) give the
log-probs and the update of padded ones, on real tiny random Qwen3 and Llama models in float32 on
CPU; plain torch, no Ray.

Tolerances: log-probs within 1e-5 absolute (float32 sums in another order: observed ~1e-6);
gradients within 1e-5 relative to each tensor's norm; weights after one AdamW step within 1e-5
absolute (lr 1e-3: AdamW's first step is ~lr * sign(gradient), so a weight whose gradient is near
0 may move by ~1e-6 on float32 noise, while a wrong gradient would move weights by ~1e-3).
"""

import pytest
import torch

from orchestra_ray.grpo.packing import pack_row, prefix_groups, row_prefix
from orchestra_ray.grpo.policy_update import SupervisedRun, grpo_update, reference_logprobs, sequence_logprobs
from orchestra_ray.grpo.shares import pack_by_tokens, rank_micro_batches
from orchestra_ray.rollout.sample import TrainBatch

ATOL = 1e-5
LENGTHS = (57, 4, 23, 9, 2, 38)  # very uneven: padding would be most of a padded micro-batch


def tiny(kind, attn="sdpa", seed=0):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(kind, vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=attn)


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, masks, old, adv = [], [], [], []
    for k, n in enumerate(LENGTHS):
        ids.append(torch.randint(1, 97, (n,), generator=g).tolist())
        prompt = max(1, n // 3)
        m = [0] * prompt + [1] * (n - prompt)
        if n > 5:
            m[prompt + 2] = 0  # a tool-output token inside the episode
        masks.append(m)
        old.append((-torch.rand(n, generator=g) * 3).tolist())
        adv.append(1.0 - 0.4 * k)
    return TrainBatch(ids, masks, old, adv)


@pytest.mark.parametrize("kind,attn", [("qwen3", "sdpa"), ("llama", "sdpa"), ("qwen3", "eager")])
def test_attention_stays_within_each_packed_sequence(kind, attn):
    model = tiny(kind, attn).eval()
    b = make_batch()
    with torch.no_grad():
        packed = sequence_logprobs(model, b.token_ids, 0.7, masks=b.loss_masks, packed=True)
        padded = sequence_logprobs(model, b.token_ids, 0.7, masks=b.loss_masks)
        alone = [sequence_logprobs(model, [t], 0.7, masks=[m])[0] for t, m in zip(b.token_ids, b.loss_masks)]
        # another sequence's tokens changed: nothing of the others moves
        changed = [list(t) for t in b.token_ids]
        changed[0] = [(x * 7) % 96 + 1 for x in changed[0]]
        moved = sequence_logprobs(model, changed, 0.7, masks=b.loss_masks, packed=True)
    assert packed.shape == padded.shape
    assert (packed - padded).abs().max() <= ATOL
    for i, lp in enumerate(alone):
        assert (packed[i, : len(lp)] - lp).abs().max() <= ATOL, i
    assert (moved[1:] - packed[1:]).abs().max() <= ATOL and (moved[0] - packed[0]).abs().max() > 0.1
    assert ((packed != 0) == (padded != 0)).all()  # the policy's tokens, and only those


def test_reference_logprobs_packed_equal_padded():
    model = tiny("qwen3").eval()
    b = make_batch(seed=2)
    padded = reference_logprobs(model, b.token_ids, 2, 0.7, b.loss_masks)
    packed = reference_logprobs(model, b.token_ids, 2, 0.7, b.loss_masks, max_tokens=40)
    assert sorted(packed) == list(range(len(LENGTHS)))
    for i, n in enumerate(LENGTHS):
        assert len(packed[i]) == n
        assert max(abs(x - y) for x, y in zip(packed[i], padded[i])) <= ATOL


@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_packed_update_equals_padded(kl_coef):
    b = make_batch(seed=3)
    ref = None
    if kl_coef:
        ref_model = tiny("qwen3", seed=9).eval()
        got = reference_logprobs(ref_model, b.token_ids, 3, 1.0, b.loss_masks)
        ref = [got[i] for i in range(len(LENGTHS))]
    runs = []
    for packing in (0, 40):  # 40 tokens: the 57-token sequence alone, the others packed 2-3 a row
        model = tiny("qwen3", seed=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        grads = {}

        def keep_grads(p, n):
            p.register_post_accumulate_grad_hook(lambda t: grads.__setitem__(n, t.grad.clone()))

        for n, p in model.named_parameters():
            keep_grads(p, n)
        stats = grpo_update(model, opt, b, ref, clip_low=0.2, clip_high=0.28, kl_coef=kl_coef, max_grad_norm=1e9,
                            micro_batch_size=2, max_tokens_per_micro_batch=packing)
        runs.append((stats, grads, {k: v.clone() for k, v in model.state_dict().items()}))
    (s0, g0, w0), (s1, g1, w1) = runs
    for k in ("loss", "kl", "clip_fraction", "ratio_mean", "grad_norm"):
        assert s1[k] == pytest.approx(s0[k], rel=1e-5, abs=1e-7), k
    for k in g0:
        assert (g1[k] - g0[k]).norm() <= 1e-5 * max(1e-6, float(g0[k].norm())), k
    for k in w0:
        assert (w1[k] - w0[k]).abs().max() <= 1e-5, k


def test_packing_fills_a_token_budget_and_keeps_ranks_in_lockstep():
    lengths = [50, 10, 40, 30, 20, 5, 45, 120]
    rows = list(range(100, 108))
    bins = pack_by_tokens(rows, lengths, 64)
    assert sorted(r for b in bins for r in b) == rows
    assert [107] in bins  # longer than the budget: alone
    assert all(sum(lengths[r - 100] for r in b) <= 64 for b in bins if b != [107])
    assert len(bins) == 5  # first-fit decreasing: 120 | 50+10 | 45+5 | 40+20 | 30
    plans = [rank_micro_batches(rows, lengths, 2, r, 2, max_tokens=64) for r in range(2)]
    assert len(plans[0]) == len(plans[1])  # FSDP: every rank runs as many passes
    assert sorted(r for p in plans for b in p for r in b) == rows
    with pytest.raises(ValueError, match="at least one token"):
        pack_row([[1, 2], []])


def grouped_batch(seed=5, system=0):
    """GRPO's shape: groups of samples of one prompt (3 prompts x 4), and one sample alone; with
    `system`, every sequence starts with the same `system` tokens (a family's system prompt)."""
    g = torch.Generator().manual_seed(seed)
    ids, masks = [], []
    head = torch.randint(1, 97, (system,), generator=g).tolist()
    for task in range(3):
        prompt = head + torch.randint(1, 97, (10 + 7 * task,), generator=g).tolist()
        for k in range(4):
            answer = torch.randint(1, 97, (3 + 2 * k + task,), generator=g).tolist()
            m = [0] * len(prompt) + [1] * len(answer)
            if len(answer) > 3:
                m[len(prompt) + 2] = 0  # a tool-output token
            ids.append(prompt + answer)
            masks.append(m)
    ids.append(head + torch.randint(1, 97, (15,), generator=g).tolist())
    masks.append([0] * (system + 5) + [1] * 10)
    n = len(ids)
    return TrainBatch(ids, masks, [(-torch.rand(len(t), generator=g) * 3).tolist() for t in ids],
                      [1.0 - 0.2 * k for k in range(n)])


@pytest.mark.parametrize("system", [0, 12])
def test_a_group_prompt_is_held_once_and_gives_the_log_probs_and_update_of_padded(system):
    b = grouped_batch(system=system)
    row = pack_row(b.token_ids, b.loss_masks, share=True)
    prompts = sum(10 + 7 * t for t in range(3))
    # 4 copies of each prompt -> 1; the system prompt of all 13 sequences -> 1
    assert row.ids.shape[1] == sum(map(len, b.token_ids)) - 3 * prompts - 12 * system
    model = tiny("qwen3").eval()
    with torch.no_grad():
        packed = sequence_logprobs(model, b.token_ids, 0.7, masks=b.loss_masks, packed=True)
        padded = sequence_logprobs(model, b.token_ids, 0.7, masks=b.loss_masks)
    assert (packed - padded).abs().max() <= ATOL and ((packed != 0) == (padded != 0)).all()
    runs = []
    for packing in (0, 64):  # 64 tokens: several rows, each group's prompt counted once per row
        model = tiny("qwen3", seed=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        stats = grpo_update(model, opt, b, None, clip_low=0.2, clip_high=0.28, kl_coef=0.0, max_grad_norm=1e9,
                            micro_batch_size=3, max_tokens_per_micro_batch=packing)
        runs.append((stats, {k: v.clone() for k, v in model.state_dict().items()}))
    (s0, w0), (s1, w1) = runs
    for k in ("loss", "clip_fraction", "ratio_mean", "grad_norm"):
        assert s1[k] == pytest.approx(s0[k], rel=1e-5, abs=1e-7), k
    for k in w0:
        assert (w1[k] - w0[k]).abs().max() <= 1e-5, k


def test_a_bin_counts_a_group_prompt_once():
    # three samples of one 30-token prompt (lengths 40, 38, 36) and one 20-token sequence alone
    lengths, groups, shared = [40, 38, 36, 20], [0, 0, 0, 1], [30, 30, 30, 0]
    bins = pack_by_tokens([0, 1, 2, 3], lengths, 64, groups, shared)
    assert bins == [[0, 1, 2], [3]]  # 40 + 8 + 6 = 54 tokens in the first row
    assert pack_by_tokens([0, 1, 2, 3], lengths, 64) == [[0, 3], [1], [2]]


def test_a_bin_counts_the_system_prompt_of_every_row_once():
    b = grouped_batch(system=12)  # 3 groups of 4 and one alone, all starting with 12 system tokens
    groups, shared = prefix_groups(b.token_ids, b.loss_masks)
    rows, lengths = list(range(len(b.token_ids))), [len(t) for t in b.token_ids]
    common = row_prefix(b.token_ids)
    assert common == 12
    for budget in (45, 70, 100):
        with_common = pack_by_tokens(rows, lengths, budget, groups, shared, common)
        assert sorted(r for bin_ in with_common for r in bin_) == rows
        assert len(with_common) < len(pack_by_tokens(rows, lengths, budget, groups, shared))
        for bin_ in with_common:  # what the budget promises: the packed row, prompts held once, fits it
            row = pack_row([b.token_ids[i] for i in bin_], [b.loss_masks[i] for i in bin_], share=True)
            assert row.ids.shape[1] <= budget or len(bin_) == 1


def test_the_warm_start_holds_the_system_prompt_once_and_trains_as_padded():
    """Demonstrations of different tasks share only their system prompt: held once per packed row
    (sdpa), the warm start's losses and weights are those of padded batches (eager attention)."""
    b = grouped_batch(system=12)
    demos = [{"token_ids": t, "loss_mask": m} for t, m in zip(b.token_ids[::4], b.loss_masks[::4])]
    held_once = sum(len(d["token_ids"]) for d in demos) - 3 * 12
    runs, fed = [], {}
    for attn in ("sdpa", "eager"):
        model = tiny("qwen3", attn, seed=4)
        model.model.embed_tokens.register_forward_pre_hook(lambda m, inp, attn=attn: fed.setdefault(attn, inp[0].shape) and None)
        run = SupervisedRun(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0), demos,
                            epochs=2, batch_size=4, max_grad_norm=1e9, seed=0)
        assert run.run(10)
        runs.append((run.losses(), model.state_dict()))
    (l0, w0), (l1, w1) = runs
    assert l0 == pytest.approx(l1, rel=1e-5)
    for k in w0:
        assert (w1[k] - w0[k]).abs().max() <= 1e-5, k
    assert tuple(fed["sdpa"]) == (1, held_once) and fed["eager"][0] == 4  # one packed row; four padded rows
