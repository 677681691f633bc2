"""The log-probs the transformers engine reports with each generated token are the ones the learner
computes for the same tokens (the importance ratio of an on-policy sample is 1), greedy and sampled
at a temperature, for prompts of different lengths and rows that stop early."""

import pytest
import torch

from orchestra_ray.grpo.policy_update import sequence_logprobs
from orchestra_ray.policy.engine import HFEngine
from tests.test_kv_cache import STOP, random_model


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_reported_logprobs_are_the_learners(temperature):
    model = random_model()
    prompts = [[3, 9, 11, 4], [5, 6], [8, 2, 9, 10, 12, 13, 14]]
    torch.manual_seed(1)
    gens = HFEngine(model, 0, max_batch_size=3).generate(
        prompts, max_new_tokens=12, temperature=temperature, stop_token_ids=[STOP])
    assert {g.finish_reason for g in gens} <= {"stop", "length"}
    for p, g in zip(prompts, gens):
        assert len(g.logprobs) == len(g.token_ids) >= 1
        with torch.no_grad():
            learner = sequence_logprobs(model, [p + g.token_ids], temperature if temperature > 0 else 1.0)[0, len(p):]
        torch.testing.assert_close(torch.tensor(g.logprobs), learner, atol=1e-5, rtol=0)


def test_a_models_own_generation_settings_do_not_bend_the_sampled_distribution():
    """A repetition penalty and a minimum length in the model's generation config would sample from
    another distribution than the one the learner scores: the engine samples from the plain one."""
    model = random_model()
    model.generation_config.repetition_penalty = 3.0
    model.generation_config.min_new_tokens = 5
    prompt = [3, 9, 11, 4]
    torch.manual_seed(2)
    (g,) = HFEngine(model, 0).generate([prompt], max_new_tokens=8, temperature=0.7, stop_token_ids=[STOP])
    with torch.no_grad():
        learner = sequence_logprobs(model, [prompt + g.token_ids], 0.7)[0, len(prompt):]
    torch.testing.assert_close(torch.tensor(g.logprobs), learner, atol=1e-5, rtol=0)


def test_a_row_that_stops_keeps_only_its_own_tokens():
    model = random_model()
    gens = HFEngine(model, 0).generate([[3, 9, 11, 4]] * 2 + [[5, 6]], max_new_tokens=30, temperature=1.0,
                                       stop_token_ids=list(range(0, 97, 3)))
    for g in gens:
        assert len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0.0 for lp in g.logprobs)
        if g.finish_reason == "stop":
            assert g.token_ids[-1] % 3 == 0 and all(t % 3 for t in g.token_ids[:-1])
