"""The vLLM engine (optional `vllm` extra): generation from token ids with the log-probs of the
sampled tokens, and weights loaded in place. Runs where vLLM and a CUDA GPU are present; compared
with the transformers model of the same weights, teacher-forced on vLLM's own samples."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="needs vLLM and a CUDA GPU (pip install 'orchestra-ray[vllm]' on a GPU machine)",
)

DTYPE = torch.bfloat16
TOL = 0.1  # bf16 log-probs of two implementations


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model("qwen3", vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=64, tie_word_embeddings=True,
                               max_position_embeddings=512)
    model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPE)
    path = tmp_path_factory.mktemp("qwen3")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def engine(model_dir):
    from orchestra_ray.policy.vllm_engine import VLLMEngine

    return VLLMEngine(model_dir, "bfloat16", 8, {"skip_tokenizer_init": True, "gpu_memory_utilization": 0.3,
                                                  "enforce_eager": True, "max_model_len": 256})


def hf_logprobs(model_dir_or_model, prompts, gens, temperature):
    from transformers import AutoModelForCausalLM

    from orchestra_ray.grpo.policy_update import sequence_logprobs

    model = model_dir_or_model
    if isinstance(model, str):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=DTYPE)
    model = model.cuda().eval()
    seqs = [list(p) + list(g.token_ids) for p, g in zip(prompts, gens)]
    masks = [[0] * len(p) + [1] * len(g.token_ids) for p, g in zip(prompts, gens)]
    with torch.no_grad():
        lp = sequence_logprobs(model, seqs, temperature, masks=masks).float().cpu()
    return [lp[i, len(p) : len(p) + len(g.token_ids)].tolist() for i, (p, g) in enumerate(zip(prompts, gens))]


def max_gap(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


PROMPTS = [[5, 17, 33, 2], [7, 7, 100, 250, 31, 9], [400]]


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_generation_from_token_ids_with_the_sampling_log_probs(engine, model_dir, temperature):
    gens = engine.generate(PROMPTS, max_new_tokens=12, temperature=temperature, stop_token_ids=[3])
    assert len(gens) == len(PROMPTS)
    for g in gens:
        assert 1 <= len(g.token_ids) <= 12 and len(g.logprobs) == len(g.token_ids)
        assert g.finish_reason == ("stop" if g.token_ids[-1] == 3 else "length")
    if temperature > 0:  # the policy's log-probs under the sampling distribution
        assert max_gap([g.logprobs for g in gens], hf_logprobs(model_dir, PROMPTS, gens, temperature)) < TOL


def test_weights_are_loaded_in_place(engine, model_dir):
    from transformers import AutoModelForCausalLM

    from actors.weight_transport import state_to_numpy

    new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPE)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    engine.load_weights(state_to_numpy(new))
    gens = engine.generate(PROMPTS, max_new_tokens=12, temperature=1.0, stop_token_ids=[3])
    got = [g.logprobs for g in gens]
    assert max_gap(got, hf_logprobs(new, PROMPTS, gens, 1.0)) < TOL  # the new weights generate
    assert max_gap(got, hf_logprobs(model_dir, PROMPTS, gens, 1.0)) > TOL  # not the old ones
