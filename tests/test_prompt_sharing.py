"""The transformers engine prefills each distinct prompt of a generate call once: identical prompts
(GRPO's groups) get the tokens and log-probs of a whole prefill per row, greedy or sampled with the
same seed, with or without sequence ids, beside unique prompts and rows continuing a kept cache; the
prefill pass is fed the distinct prompts alone."""

import pytest
import torch

from orchestra_ray.policy.engine import HFEngine
from tests.test_kv_cache import STOP, FedTokens, assert_same, generate, random_model


def prompts_of(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 97, (n,), generator=g).tolist() for n in lengths]


def batch():
    """Groups of identical prompts of different lengths with unique prompts among them."""
    a, b, c, d, e = prompts_of((9, 4, 14, 6, 2))
    return [a, b, a, c, a, b, d, e, e, [5]]


@pytest.mark.parametrize("system", [0, 20])
def test_identical_prompts_give_the_tokens_of_whole_prefills(system):
    """... and with a system prompt before every prompt (`system` tokens), prefilled once."""
    model = random_model()
    whole = HFEngine(model, 0, kv_cache_tokens=0, share_prompt_prefill=False)
    shared, unshared = HFEngine(model, 0, kv_cache_tokens=0), HFEngine(model, 0, share_prompt_prefill=False)
    assert shared.share_prompt_prefill and not whole.share_prompt_prefill
    prompts = with_system(batch(), system)
    assert_same(generate(shared, prompts), generate(whole, prompts))
    # With sequence ids: the same tokens, and the same caches kept as without sharing.
    keyed = HFEngine(model, 0)
    ids = list(range(len(prompts)))
    first = generate(keyed, prompts, ids=ids)
    assert_same(first, generate(whole, prompts))
    assert_same(generate(unshared, prompts, ids=ids), first)
    assert {i: k.tokens for i, k in keyed.kept.kept.items()} == {i: k.tokens for i, k in unshared.kept.kept.items()}
    # Rows continuing their kept caches in the same batch as new groups and a unique prompt.
    nxt = [p + g.token_ids + [21, 22, 23][: 1 + i % 3] for i, (p, g) in enumerate(zip(prompts, first))][:4]
    fresh = with_system(batch()[:6] + prompts_of((7,), seed=2), system)
    mixed = nxt + fresh
    expected = generate(whole, mixed)
    kept = [keyed.kept.take(i, p) for i, p in enumerate(nxt)]
    assert all(k is not None for k in kept)
    keyed.kept.clear()  # a kept cache in one batch with new prompts, as `generate` would not batch them
    for i, k in enumerate(kept):
        keyed.kept.put(i, k, keyed.kept.epoch)
    gens = keyed._generate(mixed, 6, 0.0, [STOP], sequence_ids=list(range(len(mixed))))
    assert_same(gens, expected)


def test_sampled_rows_draw_the_same_samples():
    model = random_model()
    prompts = batch() * 2
    runs = []
    for share in (True, False):
        torch.manual_seed(123)
        engine = HFEngine(model, 0, share_prompt_prefill=share)
        runs.append(engine.generate(prompts, max_new_tokens=12, temperature=0.8, stop_token_ids=[STOP]))
    assert_same(*runs)
    assert len({tuple(g.token_ids) for g in runs[0]}) > 4  # samples, not one greedy answer per prompt


def test_the_prefill_pass_sees_each_distinct_prompt_once():
    model = random_model()
    prompts = [p for p in prompts_of((30, 12, 25)) for _ in range(8)]
    fed = FedTokens(model)
    generate(HFEngine(model, 0), prompts, new_tokens=2)
    assert fed.calls[:2] == [3 * 29, len(prompts)]  # the distinct prompts but their last token; then one per row
    fed.calls.clear()
    generate(HFEngine(model, 0, share_prompt_prefill=False), prompts, new_tokens=2)
    assert fed.calls[0] == len(prompts) * 30


def with_system(prompts, n=20):
    """Each prompt after the same `n` tokens: a family's system prompt."""
    system = prompts_of((n,), seed=3)[0]
    return [system + p for p in prompts]


def test_a_prefix_every_prompt_shares_is_prefilled_once_and_changes_no_token():
    model = random_model()
    whole = HFEngine(model, 0, kv_cache_tokens=0, share_prompt_prefill=False)
    prompts = with_system(batch()[:-1])  # groups and unique prompts, all after one system prompt
    fed = FedTokens(model)
    shared = generate(HFEngine(model, 0, kv_cache_tokens=0), prompts)
    # the system prompt once; the five distinct prompts' own parts (but their last token) once each,
    # left padded to the longest (14 - 1); then one token per row
    assert fed.calls[:3] == [20, 5 * 13, len(prompts)]
    assert_same(shared, generate(whole, prompts))
    # every prompt distinct: the system prompt once, then each row its own part
    fed.calls.clear()
    distinct = with_system(prompts_of((9, 4, 14, 6, 3), seed=4))
    assert_same(generate(HFEngine(model, 0), distinct), generate(whole, distinct))
    assert fed.calls[0] == 20 and fed.calls[1] == 5 * 14
    # sampled with the same seed: the same draws
    runs = []
    for share in (True, False):
        torch.manual_seed(7)
        runs.append(HFEngine(model, 0, share_prompt_prefill=share).generate(prompts * 2, max_new_tokens=12, temperature=0.8,
                                                                            stop_token_ids=[STOP]))
    assert_same(*runs)
