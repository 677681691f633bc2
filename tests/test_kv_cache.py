"""The transformers engine's kept KV cache between an episode's turns: greedy generation from the
kept cache gives the tokens of a prefill of the whole prompt (log-probs within float32 rounding),
for batches of sequences of different lengths, through the episode loop too; new weights, a changed
prefix and eviction fall back to a whole prefill."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from orchestra_ray.families.task import Task
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.tiny_model import train_tokenizer
from orchestra_ray.rollout.chat import ChatFormat, tool_call_text
from orchestra_ray.rollout.episode import EpisodeLimits, new_episodes, run_episodes
from orchestra_ray.tools.spec import expert_tools

LOGPROB_TOL = 1e-5  # float32: the kept and the recomputed keys differ only by rounding
STOP = 7


def random_model(vocab: int = 97, seed: int = 0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, max_position_embeddings=512)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


class FedTokens:
    """Counts the token positions the model is fed (padding included), call by call."""

    def __init__(self, model):
        self.calls = []
        model.get_input_embeddings().register_forward_hook(lambda m, inp, out: self.calls.append(inp[0].numel()))


def generate(engine, prompts, ids=None, new_tokens=6):
    kwargs = {} if ids is None else {"sequence_ids": ids}
    return engine.generate(prompts, max_new_tokens=new_tokens, temperature=0.0, stop_token_ids=[STOP], **kwargs)


def assert_same(kept, full):
    for a, b in zip(kept, full):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= LOGPROB_TOL


def test_kept_cache_gives_the_tokens_of_a_whole_prefill():
    model = random_model()
    kept, full = HFEngine(model, 0, max_batch_size=3), HFEngine(model, 0, max_batch_size=3, kv_cache_tokens=0)
    assert kept.keeps_kv_cache and not full.keeps_kv_cache
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 97, (n,), generator=g).tolist() for n in (5, 11, 3, 8)]  # two batches of 3 and 1
    fed = FedTokens(model)
    for turn in range(4):
        n = len(fed.calls)
        a = generate(kept, prompts, ids=["a", "b", "c", "d"])
        kept_fed = fed.calls[n]  # the first batch's prefill
        n = len(fed.calls)
        b = generate(full, prompts)
        assert_same(a, b)
        if turn > 0:  # only the last generated token and the observation are prefilled
            assert kept_fed < fed.calls[n] / 2
        # turn k+1 = turn k's prompt + its generated tokens + an observation of a different length per sequence
        prompts = [p + x.token_ids + torch.randint(1, 97, (2 + 3 * i,), generator=g).tolist()
                   for i, (p, x) in enumerate(zip(prompts, a))]
    # each kept up to its last generated token (not yet fed), without the observation after it
    assert kept.kept.tokens == sum(len(p) - 1 - (2 + 3 * i) for i, p in enumerate(prompts))
    kept.end_sequences(["a", "b", "c", "d"])
    assert kept.kept.tokens == 0 and not kept.kept.kept


def test_new_weights_drop_the_cache():
    model, other = random_model(seed=0), random_model(seed=1)
    engine = HFEngine(model, 0)
    prompts = [[5, 9, 13, 2, 40], [11, 3]]
    first = generate(engine, prompts, ids=[1, 2])
    engine.load_weights({k: v.clone() for k, v in other.state_dict().items()})
    assert engine.kept.tokens == 0
    prompts = [p + g.token_ids + [21, 22] for p, g in zip(prompts, first)]
    fresh = HFEngine(random_model(seed=1), 0, kv_cache_tokens=0)
    assert_same(generate(engine, prompts, ids=[1, 2]), generate(fresh, prompts))


def test_a_changed_prefix_or_an_evicted_sequence_is_prefilled_whole():
    model = random_model()
    engine, full = HFEngine(model, 0, kv_cache_tokens=40), HFEngine(model, 0, kv_cache_tokens=0)
    prompts = [[5, 9, 13, 2, 40, 41, 42, 43], [11, 3, 4], list(range(20, 50))]
    first = generate(engine, prompts, ids=[1, 2, 3])
    assert engine.kept.tokens <= 40 and list(engine.kept.kept) == [2, 3]  # 1, stored first, evicted
    nxt = [p + g.token_ids + [21, 22] for p, g in zip(prompts, first)]
    nxt[2][1] = 10  # an edited history: the kept keys are not for these tokens
    streamed = {}  # 2 continues its cache, in a batch apart from 1 and 3
    gens = engine.generate(nxt, max_new_tokens=6, temperature=0.0, stop_token_ids=[STOP], sequence_ids=[1, 2, 3],
                           on_token=lambda i, tok: streamed.setdefault(i, []).append(tok))
    assert_same(gens, generate(full, nxt))
    assert streamed == {i: g.token_ids for i, g in enumerate(gens)}  # each prompt's own tokens, by its index
    shorter = [nxt[1][:3]]  # shorter than what is kept for 2
    assert_same(generate(engine, shorter, ids=[2]), generate(full, shorter))


def test_episode_loop_keeps_each_episode_cache_across_turns():
    """Several episodes of different prompts through the real loop: the policy's (random) text is no
    tool call, so every turn ends in an error observation and the episodes run to the turn limit."""
    tok = train_tokenizer(["hello world", tool_call_text("answer", {"text": "x"})] * 20, 300, ["cheap"])
    chat = ChatFormat(tok)
    model = random_model(vocab=len(tok))
    pref = profile_vector("balanced", ["cheap"])
    limits = EpisodeLimits(max_turns=3, max_new_tokens=8)

    class NoTools:
        def respond_many(self, requests):
            raise AssertionError("no expert is called")

        run_tools = respond_many

    def run(engine):
        eps = [ep for i, q in enumerate(["hi", "hello world hello", "a longer question than the others"])
               for ep in new_episodes(chat, "system", Task(f"t{i}", f"q{i}", q, "x", pref), q, 2)]
        run_episodes(engine, chat, eps, expert_tools(["cheap"]), NoTools(), limits, temperature=0.0)
        return eps

    kept = HFEngine(model, tok.pad_token_id, max_batch_size=4)
    fed = FedTokens(model)
    with_cache = run(kept)
    kept_fed = sum(fed.calls)
    without = run(HFEngine(model, tok.pad_token_id, max_batch_size=4, kv_cache_tokens=0))
    assert all(ep.turns == 3 for ep in with_cache)
    for a, b in zip(with_cache, without):
        assert a.token_ids == b.token_ids and a.loss_mask == b.loss_mask
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= LOGPROB_TOL
    assert kept_fed < sum(fed.calls) - kept_fed  # fewer positions fed with the kept caches
    assert kept.kept.tokens == 0  # released when the episodes ended


@pytest.mark.parametrize("bad", [["x"], [1, 2, 3]])
def test_sequence_ids_must_match_the_prompts(bad):
    with pytest.raises(ValueError, match="sequence ids for 2 prompts"):
        generate(HFEngine(random_model(), 0), [[1, 2], [3]], ids=bad)
