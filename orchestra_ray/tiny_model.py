"""The quickstart policy: a tiny Qwen3-architecture model and a byte-level BPE tokenizer trained on
the project's own prompts, built deterministically from a seed and saved in Hugging Face format, so
nothing is downloaded. Real models load through the same `load_policy` from an id or path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from typing import Iterable, List, Tuple

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def build_tiny_policy(cfg, corpus: List[str], out_dir: str) -> str:
    """Train the tokenizer, initialise the model from `cfg.seed`, save both to `out_dir`."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)) or ".")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def tiny_policy_path(cfg, corpus: List[str], cache_dir: str) -> str:
    """Build once per (config, corpus); later runs reuse the same files."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for text in corpus:
        h.update(text.encode())
    path = os.path.join(cache_dir, f"tiny-qwen3-{h.hexdigest()[:12]}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        os.makedirs(cache_dir, exist_ok=True)
        build_tiny_policy(cfg, corpus, path)
    return path


def load_policy(path: str, dtype: str = "float32", device: str = "cpu") -> Tuple[torch.nn.Module, object]:
    """Any causal LM in Hugging Face format (the tiny one, Qwen/Qwen3-8B, a checkpoint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return model, tokenizer
