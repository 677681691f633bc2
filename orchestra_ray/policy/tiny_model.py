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
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

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


def train_tokenizer(corpus: Iterable[str], vocab_size: int, added_tokens: Sequence[str] = ()):
    """Byte-level BPE; `added_tokens` (the expert slot names) become whole tokens, so that choosing
    an expert is one decision of the tiny policy rather than a spelling exercise."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
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
    if added_tokens:
        tok.add_tokens([AddedToken(t, single_word=False, normalized=False) for t in added_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def document_windows(documents: Sequence[Sequence[int]], n: int, separator: int) -> Tuple[torch.Tensor, List[int]]:
    """The documents' token ids packed into one stream (`separator` after each) and the offsets of
    the windows of `n` tokens to train on: one per document start that leaves a full window, so a
    document shorter than `n` is always seen whole (a call with its result, an id with the place it
    is repeated) and the rest of its window is the documents after it. A stream shorter than one
    window is padded with `separator`."""
    ids: List[int] = []
    starts: List[int] = []
    for d in documents:
        starts.append(len(ids))
        ids.extend(d)
        ids.append(separator)
    if len(ids) < n:
        ids.extend([separator] * (n - len(ids)))
    return torch.tensor(ids, dtype=torch.long), [s for s in starts if s + n <= len(ids)]


OnStep = Optional[Callable[[int, int], None]]  # (steps done, steps in all): pre-training's progress


def pretrain(model, tokenizer, documents: List[str], cfg, on_step: OnStep = None) -> List[float]:
    """Next-token prediction on windows of the packed documents: document-aligned
    (`document_windows`) or, with `pretrain_windows: packed`, consecutive; returns the loss every
    50 steps."""
    n = cfg.pretrain_seq_len
    encoded = [tokenizer.encode(d, add_special_tokens=False) for d in documents]
    stream, starts = document_windows(encoded, n, tokenizer.pad_token_id)  # <|endoftext|> between documents
    if cfg.pretrain_windows == "packed":  # consecutive windows of the stream, cutting documents anywhere
        starts = list(range(0, len(stream) - n + 1, n))
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr)
    model.train()
    losses = []
    on_step = on_step or (lambda done, total: None)
    on_step(0, cfg.pretrain_steps)
    for step in range(cfg.pretrain_steps):
        picks = torch.randint(len(starts), (cfg.pretrain_batch_size,), generator=g).tolist()
        batch = torch.stack([stream[starts[i]: starts[i] + n] for i in picks])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.pretrain_steps - 1:
            losses.append(float(loss.detach()))
        on_step(step + 1, cfg.pretrain_steps)
    model.eval()
    return losses


def build_tiny_policy(cfg, corpus: List[str], out_dir: str, documents: List[str] = (), added_tokens: Sequence[str] = (),
                      on_step: OnStep = None) -> str:
    """Train the tokenizer, initialise the model from `cfg.seed`, pre-train it on `documents`,
    save both to `out_dir`."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    tokenizer = train_tokenizer(corpus, cfg.vocab_size, added_tokens)
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
    if documents and cfg.pretrain_steps > 0:
        pretrain(model, tokenizer, list(documents), cfg, on_step)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)) or ".")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def tiny_policy_path(cfg, corpus: List[str], cache_dir: str, documents: List[str] = (), added_tokens: Sequence[str] = (),
                     on_step: OnStep = None) -> str:
    """Build once per (config, corpus, documents, added tokens); later runs reuse the same files."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for text in [*corpus, "\0", *documents, "\0", *added_tokens]:
        h.update(text.encode())
    path = os.path.join(cache_dir, f"tiny-qwen3-{h.hexdigest()[:12]}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        os.makedirs(cache_dir, exist_ok=True)
        build_tiny_policy(cfg, corpus, path, documents, added_tokens, on_step)
    return path


def load_policy(path: str, dtype: str = "float32", device: str = "cpu") -> Tuple[torch.nn.Module, object]:
    """Any causal LM in Hugging Face format (the tiny one, Qwen/Qwen3-8B, a checkpoint)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return model, load_tokenizer(path)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
