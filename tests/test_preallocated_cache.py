"""Decoding into preallocated KV buffers (orchestra_ray/policy/preallocated_cache.py) gives what
transformers' concatenating cache gives: the layer's views equal the concatenation of what was
written, through growth past its capacity and after its views are replaced; the engine's tokens and
log-probs match an engine without it, with kept caches across turns and a shared system prompt."""

import torch

from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.preallocated_cache import RESERVE, PreallocatedLayer
from tests.test_kv_cache import STOP, assert_same, random_model


def test_the_layer_holds_what_was_written_through_growth_and_replaced_views():
    torch.manual_seed(0)
    layer = PreallocatedLayer(capacity=3)
    chunks = [torch.randn(2, 3, n, 4) for n in (2, 1, 4, 1)]  # 8 positions: grows twice past 3
    for i, c in enumerate(chunks):
        k, v = layer.update(c, -c)
        want = torch.cat(chunks[: i + 1], dim=-2)
        torch.testing.assert_close(k, want, rtol=0, atol=0)
        torch.testing.assert_close(v, -want, rtol=0, atol=0)
        assert layer.get_seq_length() == want.shape[-2]
    layer.batch_select_indices(torch.tensor([1]))  # generate's row selection replaces the views
    extra = torch.randn(1, 3, 2, 4)
    k, _ = layer.update(extra, -extra)
    torch.testing.assert_close(k, torch.cat([torch.cat(chunks, -2)[1:], extra], -2), rtol=0, atol=0)


def test_engine_gives_the_tokens_of_the_concatenating_cache():
    model = random_model()
    system = list(range(20, 40))
    turn1 = [system + [3, 9, 11], system + [5], system + [8, 2, 9, 10, 12]]
    engines = [HFEngine(model, 0, max_batch_size=3, preallocate=p) for p in (True, False)]
    outs = []
    for e in engines:
        first = e.generate(turn1, max_new_tokens=10, temperature=0.0, stop_token_ids=[STOP], sequence_ids=[0, 1, 2])
        turn2 = [p + g.token_ids + [13, 14] for p, g in zip(turn1, first)]  # continue each kept cache
        second = e.generate(turn2, max_new_tokens=10, temperature=0.0, stop_token_ids=[STOP], sequence_ids=[0, 1, 2])
        outs.append(first + second)
    assert engines[0].preallocate and not engines[1].preallocate
    assert_same(outs[0], outs[1])
    assert engines[0].kept.tokens > 0  # the second turn continued kept caches


def test_buffers_grow_by_the_reserve_as_decoding_outlives_it():
    layer = PreallocatedLayer(capacity=10)
    layer.update(torch.zeros(1, 2, 10, 4), torch.zeros(1, 2, 10, 4))
    k, _ = layer.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert k.shape[-2] == 11 and layer._k.shape[-2] == 11 + RESERVE  # one reserve more, not twice the cache
    model = random_model()
    prompts = [[3, 9, 11], [5], [8, 2, 9, 10, 12]]
    # no stop token: every row decodes past the first reserve, through a growth of the buffers
    runs = [HFEngine(model, 0, kv_cache_tokens=0, preallocate=p).generate(
        prompts, max_new_tokens=RESERVE + 20, temperature=0.0, stop_token_ids=[]) for p in (True, False)]
    assert all(len(g.token_ids) == RESERVE + 20 for g in runs[0])
    assert_same(runs[0], runs[1])
