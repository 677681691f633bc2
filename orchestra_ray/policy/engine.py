"""Generation engines: token ids in, token ids and their log-probs out, weights loaded by name.

`HFEngine` implements the interface with `transformers` (batched, KV cache, CPU or CUDA). Any other
engine (a vLLM engine, say) only has to provide `generate` and `load_weights` with these meanings;
`generate`'s `on_token` (called with a prompt's index and each token it generates, up to its stop
token) is passed only by callers that stream.

An engine with `keeps_kv_cache` true also takes `sequence_ids` (one hashable per prompt, unique among
the live sequences; a multi-turn episode keeps its id across turns) and `end_sequences(ids)`: it keeps
each sequence's KV cache between calls and prefills only the tokens a prompt adds to what it last saw
(`orchestra_ray/policy/kv_cache.py`). The vLLM engine covers the same ground without ids: its automatic
prefix caching finds an episode's earlier turns by their token blocks.

`HFEngine` also prefills each distinct prompt of a call once (GRPO's groups of identical prompts;
`orchestra_ray/policy/prompt_sharing.py`), with or without ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache

from orchestra_ray.policy.kv_cache import KV_CACHE_TOKENS, SequenceCache, cache_field, pack, plain_dynamic_cache, unpack
from orchestra_ray.policy.preallocated_cache import RESERVE, PreallocatedLayer, preallocated_cache
from orchestra_ray.policy.prompt_sharing import share_prefill


@dataclass
class Generation:
    token_ids: List[int]
    logprobs: List[float]  # of each generated token, under the sampling distribution
    finish_reason: str  # "stop" (a stop token was generated) or "length"


OnToken = Callable[[int, int], None]  # (prompt index, token id)


class Engine(Protocol):
    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float, stop_token_ids: Sequence[int],
        on_token: Optional[OnToken] = None,
    ) -> List[Generation]: ...

    def load_weights(self, weights: Mapping[str, object]) -> None: ...


class HFEngine:
    def __init__(self, model, pad_token_id: int, max_batch_size: int = 64, share_weights: bool = False,
                 kv_cache_tokens: int = KV_CACHE_TOKENS, share_prompt_prefill: bool = True,
                 preallocate: bool = True):
        """`share_weights`: on CPU, loaded float arrays of the model's dtype become the parameters
        themselves instead of being copied in: the published weights in shared memory are then read
        in place by every engine on the node (generation never writes its weights).
        `kv_cache_tokens`: at most this many tokens' KV kept between calls for `sequence_ids`; 0: none.
        `share_prompt_prefill`: identical prompts of a call share one prefill of their prefix.
        `preallocate`: decoding writes keys and values into buffers sized once per call
        (`preallocated_cache`) instead of concatenating the whole cache at every token."""
        self.model = model.eval()
        # The policy samples from its plain logits (over the temperature), the distribution the
        # learner's log-probs are of: a repetition penalty or banned tokens in the model's own
        # generation config would change what is sampled but not what is trained on.
        own = model.generation_config
        self.model.generation_config = GenerationConfig(bos_token_id=own.bos_token_id, eos_token_id=own.eos_token_id,
                                                        pad_token_id=own.pad_token_id)
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.share_weights = share_weights and self.device.type == "cpu"
        plain = plain_dynamic_cache(model)  # the cache layout `pack` builds
        keep = kv_cache_tokens > 0 and plain
        self.kept = SequenceCache(kv_cache_tokens) if keep else None
        self.keeps_kv_cache = keep
        self.share_prompt_prefill = share_prompt_prefill and plain
        self.preallocate = preallocate and plain
        # as many cache layers as transformers' own cache for this model has (`plain` checked their kind)
        self.num_layers = len(DynamicCache(config=model.config).layers) if self.preallocate else 0

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids, on_token=None,
                 sequence_ids=None) -> List[Generation]:
        """Sequences are generated in batches of at most `max_batch_size`, which bounds the memory
        of the prefill's attention."""
        if sequence_ids is not None and len(sequence_ids) != len(prompts):
            raise ValueError(f"{len(sequence_ids)} sequence ids for {len(prompts)} prompts")
        prompts = [list(p) for p in prompts]
        out: List[Optional[Generation]] = [None] * len(prompts)
        for rows in self._batches(prompts, sequence_ids):
            sink = None if on_token is None else (lambda row, tok, rows=rows: on_token(rows[row], tok))
            streamer = None if sink is None else _TokenStreamer(sink, 0, stop_token_ids)
            seq = None if sequence_ids is None else [sequence_ids[r] for r in rows]
            gens = self._generate([prompts[r] for r in rows], max_new_tokens, temperature, stop_token_ids, streamer, seq)
            for r, gen in zip(rows, gens):
                out[r] = gen
        return out

    def _batches(self, prompts: List[List[int]], sequence_ids) -> List[List[int]]:
        """The prompts' indices per generate call: sequences that continue a kept cache apart from
        those prefilled whole, since one long prompt pads every row of its batch's prefill to its length."""
        groups = [list(range(len(prompts)))]
        if self.kept is not None and sequence_ids is not None:
            continues = [self.kept.continues(s, p) for s, p in zip(sequence_ids, prompts)]
            groups = [[i for i, c in enumerate(continues) if c], [i for i, c in enumerate(continues) if not c]]
        b = self.max_batch_size
        return [g[i : i + b] for g in groups for i in range(0, len(g), b)]

    def end_sequences(self, sequence_ids) -> None:
        """Drop the kept caches of sequences that will not be continued (ended episodes)."""
        if self.kept is not None:
            self.kept.release(sequence_ids)

    @torch.no_grad()
    def _generate(self, prompts, max_new_tokens, temperature, stop_token_ids, streamer=None,
                  sequence_ids=None) -> List[Generation]:
        if not prompts:
            return []
        keyed = self.kept is not None and sequence_ids is not None
        epoch = self.kept.epoch if keyed else 0
        kept = [self.kept.take(s, p) for s, p in zip(sequence_ids, prompts)] if keyed else [None] * len(prompts)
        if self.share_prompt_prefill:
            kept = share_prefill(self.model, prompts, kept, self.pad_token_id, self.device)
        # Left padding keeps every prompt's last token at the same position for batched decoding; a
        # kept cache stands for the columns before a sequence's new tokens (kv_cache.pack).
        reserve = min(max_new_tokens, RESERVE) if self.preallocate else None
        ids, mask, cache = pack(prompts, kept, self.pad_token_id, self.device, reserve)
        kept = None  # the batch's cache holds copies
        width = ids.shape[1]
        if cache is None and self.preallocate:
            cache = preallocated_cache([PreallocatedLayer(width + reserve) for _ in range(self.num_layers)])
        greedy = temperature <= 0
        chosen = _ChosenLogprobs(1.0 if greedy else temperature)
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            **({} if cache is None else {cache_field(): cache}),
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_k=None,
            top_p=None,
            eos_token_id=list(stop_token_ids),
            pad_token_id=self.pad_token_id,
            logits_processor=LogitsProcessorList([chosen]),
            return_dict_in_generate=True,
            streamer=streamer,
        )
        new = out.sequences[:, width:].cpu()
        lps = chosen.logprobs(new)
        stops = set(stop_token_ids)
        result = []
        for i in range(len(prompts)):
            toks, lp = [], []
            finish = "length"
            for t in range(new.shape[1]):
                tok = int(new[i, t])
                toks.append(tok)
                lp.append(float(lps[i, t]))
                if tok in stops:
                    finish = "stop"
                    break
            result.append(Generation(toks, lp, finish))
        if keyed:
            for s, k in zip(sequence_ids, unpack(getattr(out, cache_field()), mask, prompts, [g.token_ids for g in result])):
                self.kept.put(s, k, epoch)
        return result

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, object]) -> None:
        if self.kept is not None:  # keys and values computed by the old weights
            self.kept.clear()
        params = self.model.state_dict(keep_vars=True)  # includes tied and buffer entries
        with warnings.catch_warnings():
            # Object-store arrays are read-only; they are only read here (copied, or shared by a
            # model that never writes them).
            warnings.simplefilter("ignore", UserWarning)
            for name, value in weights.items():
                if name not in params:
                    raise KeyError(f"engine model has no parameter '{name}'")
                p = params[name]
                t = torch.from_numpy(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
                if t.shape != p.shape:
                    raise ValueError(f"weight '{name}' has shape {tuple(t.shape)}, the engine's model {tuple(p.shape)}")
                if p.device.type == "cpu" and t.dtype == p.dtype and t.device.type == "cpu" and p.is_contiguous():
                    if self.share_weights and t.is_floating_point():
                        p.data = t
                    else:  # numpy's memcpy: several times faster than a one-thread torch copy_
                        np.copyto(p.data.numpy(), t.detach().numpy())
                else:
                    p.data.copy_(t.to(p.dtype))


class _ChosenLogprobs(LogitsProcessor):
    """Each generated token's log-prob under the sampling distribution (the raw logits over the
    temperature), one step behind the sampler: a step's call sees the token the step before chose.
    Only one step's vocabulary-wide log-softmax is alive at a time; `output_logits` would keep
    batch x new tokens x vocabulary floats (3 GB for 64 sequences of 256 tokens over SmolLM2's
    49,152) and copy them twice more. Custom processors run before transformers' warpers
    (temperature, top-k, top-p) and after its other processors, which a call here sets none of and
    `HFEngine` strips from the model's generation config (a repetition penalty, say), so the scores
    seen here are the model's logits."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.last: Optional[torch.Tensor] = None  # (batch, vocab) log-softmax of the latest step
        self.steps: List[torch.Tensor] = []  # (batch,) log-prob of each step's chosen token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            self.steps.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def logprobs(self, new: torch.Tensor) -> torch.Tensor:
        """(batch, new tokens) log-probs of `new`, the tokens generate returned after the prompt.
        A step transformers ran and then undid is past `new`'s end and left out."""
        n = new.shape[1]
        if n == 0:
            return torch.zeros(new.shape)
        steps = self.steps[:n]
        if len(steps) < n:  # the last token was chosen after the last call
            steps.append(self.last.gather(-1, new[:, n - 1 : n].to(self.last.device)).squeeze(-1))
        return torch.stack(steps, dim=1).cpu()


class _TokenStreamer:
    """transformers' streamer interface (`put` the prompt, then each step's tokens; `end`) turned
    into per-prompt `on_token` calls; a finished row's padding is not reported."""

    def __init__(self, on_token: OnToken, offset: int, stop_token_ids: Sequence[int]):
        self.on_token, self.offset, self.stops = on_token, offset, set(stop_token_ids)
        self.prompt_seen = False
        self.done: set = set()

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call hands over the prompt
            self.prompt_seen = True
            return
        for row, tok in enumerate(value.reshape(-1).tolist()):
            if row in self.done:
                continue
            if tok in self.stops:
                self.done.add(row)
            self.on_token(self.offset + row, tok)

    def end(self) -> None:  # part of the streamer interface; each token was reported as it came
        return None
