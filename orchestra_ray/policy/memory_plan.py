"""The memory plan: bytes per device of every part of a run, estimated from the model's config and
the run's layout before anything is loaded, so a run that cannot fit is refused up front.

Plain data in, plain data out. The counts follow what the code does:
- a learner rank holds 1/N of the parameters, gradients and AdamW's two moments (FSDP2 shards all
  three; N = 1 shards nothing), plus the unsharded parameters of the layers being gathered (two
  decoder layers: the one computing and the one prefetched) and the embeddings' gather at the root;
- with LoRA the base is frozen (parameters only) and only the adapters have gradients and moments;
- activations per micro-batch: what one eager decoder layer saves for backward per token (below),
  times the layers, or with gradient checkpointing one hidden state per layer plus one layer
  recomputed; and the logits of the policy's own tokens, in float32 through log-softmax;
- the reference model (when the KL term is on): a frozen copy, sharded on the ranks when N > 1, on a
  device of its own (the learner's kind) when N = 1;
- a rollout engine: its weights and the KV cache of a full batch of longest episodes (transformers),
  or its share of the device (vLLM's `gpu_memory_utilization`), which must hold the weights and one
  longest episode;
- each process's runtime (the framework, kernels, CUDA context), measured once per kind of device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
# Resident memory of a process before any model: Python, torch, transformers and Ray's worker on CPU
# (measured here: 0.45-0.55 GB); on a GPU the CUDA context and kernels a process holds outside
# PyTorch's allocator (0.5-1 GB on H100s, by NVIDIA's and the anchors' reports).
RUNTIME_BYTES = {"cpu": 0.5 * GB, "cuda": 1.0 * GB}
# Elements one eager decoder layer saves per token for backward, in units of its widths: the two
# RMSNorms' inputs and outputs (4 x hidden), q (raw, normed, rotated), k (the same), v, k and v
# repeated to every head for attention, attention's output before and after o_proj's input
# (6 x q width + 4 x kv width), and the MLP's gate, up, activation and product (4 x intermediate).
ACT_HIDDEN, ACT_Q, ACT_KV, ACT_INTERMEDIATE = 4, 6, 4, 4
LOGIT_COPIES = 4  # logits, log-softmax's output, and their two gradients, in float32


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's widths (Qwen3, Llama and their kin), from its HF config."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qk_norm: bool  # Qwen3's per-head q/k RMSNorm

    @classmethod
    def from_config(cls, cfg: Mapping) -> "ModelShape":
        if not isinstance(cfg, Mapping):
            raise ValueError(f"a model config is a JSON object, got {type(cfg).__name__}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
                   if k not in cfg]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}: the memory plan needs a decoder's widths")
        widths = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        bad = [k for k in widths if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1]
        if bad:
            raise ValueError(f"model config: {', '.join(bad)} must be positive integers")
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
        return cls(int(cfg["vocab_size"]), int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]),
                   heads, int(cfg.get("num_key_value_heads") or heads), head_dim, bool(cfg.get("tie_word_embeddings", False)),
                   str(cfg.get("model_type", "")).startswith("qwen3"))

    def module_shapes(self) -> Dict[str, Tuple[int, int]]:
        """(in, out) of each linear of one decoder layer, by its HF name."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_parameters(self) -> int:
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return sum(a * b for a, b in self.module_shapes().values()) + norms

    def parameters(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_parameters() + self.hidden

    def lora_parameters(self, rank: int, targets: Sequence[str]) -> int:
        shapes = self.module_shapes()
        return self.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)

    def activation_elements_per_token(self) -> int:
        """Per decoder layer, saved for backward (module docstring)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return ACT_HIDDEN * self.hidden + ACT_Q * q + ACT_KV * kv + ACT_INTERMEDIATE * self.intermediate

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class Layout:
    """What the run puts where (from the run's config; `pipelines/plan.py` fills it)."""

    num_learners: int = 1
    learner_device: str = "cpu"  # cpu | cuda
    param_dtype: str = "float32"  # the policy's dtype
    compute_dtype: str = "float32"  # FSDP's mixed precision, else the policy's
    cpu_offload: bool = False
    gradient_checkpointing: bool = False
    micro_batch_size: int = 16
    max_tokens_per_micro_batch: int = 0  # > 0: packed micro-batches of this many tokens, micro_batch_size unused
    seq_len: int = 1536  # longest episode, prompt included
    policy_tokens: int = 1536  # the policy's own tokens of one episode (where logits are computed)
    lora_rank: int = 0
    lora_targets: Tuple[str, ...] = ()
    reference: bool = True  # the KL term needs the reference model
    engine: str = "hf"  # hf | vllm
    engine_dtype: str = ""  # the rollout engines' dtype ("": param_dtype)
    rollout_device: str = "cpu"
    rollout_workers: int = 2
    engine_batch: int = 64  # sequences per generate call
    engine_memory_fraction: float = 0.9  # vLLM's gpu_memory_utilization
    # Bytes of one device of each kind (None: unknown, that kind is not checked).
    gpu_bytes: Optional[float] = None
    host_bytes: Optional[float] = None


@dataclass
class Item:
    actor: str  # "learner rank", "reference", "rollout worker"
    part: str
    bytes: float
    device: str  # "gpu" | "host"


@dataclass
class Plan:
    shape: ModelShape
    layout: Layout
    items: List[Item] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)  # one line per device that cannot hold its parts
    advice: List[str] = field(default_factory=list)  # the keys that would make it fit

    @property
    def fits(self) -> bool:
        return not self.problems

    def total(self, actor: str, device: Optional[str] = None) -> float:
        return sum(i.bytes for i in self.items if i.actor == actor and (device is None or i.device == device))


def _bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; the memory plan knows {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def learner_items(shape: ModelShape, lay: Layout) -> List[Item]:
    n = lay.num_learners
    gpu = lay.learner_device == "cuda"
    state_dev = "host" if (lay.cpu_offload or not gpu) else "gpu"
    work_dev = "gpu" if gpu else "host"
    pb, cb = _bytes(lay.param_dtype), _bytes(lay.compute_dtype)
    p = shape.parameters()
    items = [Item("learner rank", "runtime", RUNTIME_BYTES["cuda" if gpu else "cpu"], work_dev)]
    if lay.lora_rank:
        a = shape.lora_parameters(lay.lora_rank, lay.lora_targets)
        # peft keeps adapters in float32 whatever the base's dtype (autocast_adapter_dtype)
        items += [Item("learner rank", "base parameters (frozen)", p * pb / n, state_dev),
                  Item("learner rank", f"adapters ({a / 1e6:.1f}M)", a * 4 / n, state_dev),
                  Item("learner rank", "adapter gradients", a * 4 / n, state_dev),
                  Item("learner rank", "AdamW state (adapters)", a * 8 / n, state_dev)]
    else:
        items += [Item("learner rank", "parameters", p * pb / n, state_dev),
                  Item("learner rank", "gradients", p * pb / n, state_dev),
                  Item("learner rank", "AdamW state (2 moments)", p * 2 * pb / n, state_dev)]
    if n > 1 or lay.cpu_offload or cb != pb:
        # layers gathered whole (FSDP) for compute: the one computing and the one prefetched, and the
        # embeddings/head at the root; their gradients before the reduce-scatter
        gathered = (2 * shape.layer_parameters() + shape.vocab * shape.hidden * (1 if shape.tied else 2)) * cb
        items.append(Item("learner rank", "gathered layers (FSDP)", gathered * (1 if lay.lora_rank else 2), work_dev))
    tokens, positions = pass_tokens(lay)
    per_layer = shape.activation_elements_per_token() * tokens * cb
    if lay.gradient_checkpointing:
        acts = shape.layers * shape.hidden * tokens * cb + per_layer
        items.append(Item("learner rank", "activations (checkpointed)", acts, work_dev))
    else:
        items.append(Item("learner rank", "activations", shape.layers * per_layer, work_dev))
    logits = positions * shape.vocab * (cb + 4 * LOGIT_COPIES - (4 if cb == 4 else 0))
    items.append(Item("learner rank", "logits of the policy's tokens", logits, work_dev))
    if n > 1 and lay.reference:
        items.append(Item("learner rank", "reference model (its shard)", p * pb / n, state_dev))
    if n > 1 or gpu or lay.lora_rank:
        # rank 0 gathers each version into a host buffer to publish it (one learner on CPU: the
        # parameters themselves are that buffer, unless LoRA publishes merged weights)
        items.append(Item("learner rank", "publish buffer (rank 0, float32)", p * 4, "host"))
    # `ray.put` writes each version into the object store's shared memory, mapped by rank 0: the new
    # version and the one workers may still read (shared pages, counted in its resident memory)
    items.append(Item("learner rank", "object store pages, 2 versions (rank 0)", 2 * p * 4, "host"))
    return items


def pass_tokens(lay: Layout) -> Tuple[int, int]:
    """(tokens, positions whose logits are computed) of the largest forward pass: micro_batch_size
    padded longest episodes, or a packed row of the token budget (one longest episode if longer),
    holding as many episodes' worth of policy tokens as longest episodes fit in it."""
    if lay.max_tokens_per_micro_batch <= 0:
        return lay.micro_batch_size * lay.seq_len, lay.micro_batch_size * lay.policy_tokens
    tokens = max(lay.max_tokens_per_micro_batch, lay.seq_len)
    return tokens, min(tokens, -(-tokens // lay.seq_len) * lay.policy_tokens)


def reference_items(shape: ModelShape, lay: Layout) -> List[Item]:
    if not lay.reference or lay.num_learners > 1:
        return []
    gpu = lay.learner_device == "cuda"
    dev = "gpu" if gpu else "host"
    tokens, positions = pass_tokens(lay)
    cb = _bytes(lay.param_dtype)
    # no backward: one layer's activations and the logits of one micro-batch at a time
    return [Item("reference", "runtime", RUNTIME_BYTES["cuda" if gpu else "cpu"], dev),
            Item("reference", "parameters (frozen)", shape.parameters() * cb, dev),
            Item("reference", "activations (inference)", 2 * shape.hidden * tokens * cb
                 + positions * shape.vocab * 4 * 2, dev)]


def rollout_items(shape: ModelShape, lay: Layout) -> List[Item]:
    gpu = lay.rollout_device == "cuda"
    dev = "gpu" if gpu else "host"
    pb = _bytes(lay.engine_dtype or lay.param_dtype)
    weights = shape.parameters() * pb
    items = [Item("rollout worker", "runtime", RUNTIME_BYTES["cuda" if gpu else "cpu"], dev),
             Item("rollout worker", "weights", weights, dev)]
    if lay.engine == "vllm" and gpu and lay.gpu_bytes:
        # vLLM takes its fraction of the device up front and fills what the weights leave with KV cache
        items = [Item("rollout worker", "vLLM share (weights + KV cache)", lay.engine_memory_fraction * lay.gpu_bytes, dev)]
    else:
        items.append(Item("rollout worker", f"KV cache ({lay.engine_batch} x {lay.seq_len} tokens)",
                          lay.engine_batch * lay.seq_len * shape.kv_bytes_per_token(pb), dev))
    return items


def plan(shape: ModelShape, lay: Layout) -> Plan:
    """Every actor's parts by device, and whether each device can hold them."""
    if lay.num_learners < 1 or lay.micro_batch_size < 1 or lay.seq_len < 1:
        raise ValueError("num_learners, micro_batch_size and seq_len must be >= 1")
    out = Plan(shape, lay, learner_items(shape, lay) + reference_items(shape, lay) + rollout_items(shape, lay))
    on_cpu = lay.learner_device != "cuda" and lay.rollout_device != "cuda"
    if on_cpu:
        # one machine's memory holds every process (the embedded cluster, or a CPU node): rank 0's
        # items once, and the published weights once for all rollout workers (they read them in place)
        rank0 = sum(i.bytes for i in out.items if i.actor == "learner rank" and "rank 0" in i.part)
        weights = sum(i.bytes for i in out.items if i.actor == "rollout worker" and i.part == "weights")
        need = ((out.total("learner rank") - rank0) * lay.num_learners + rank0 + out.total("reference")
                + (out.total("rollout worker") - weights) * lay.rollout_workers + weights)
        if lay.host_bytes and need > lay.host_bytes:
            out.problems.append(f"{need / GB:.1f} GB for {lay.num_learners} learner rank(s), the reference and "
                                f"{lay.rollout_workers} rollout worker(s) > {lay.host_bytes / GB:.1f} GB of host memory")
    else:
        for actor in ("learner rank", "reference", "rollout worker"):
            need = out.total(actor, "gpu")
            if lay.gpu_bytes and need > lay.gpu_bytes:
                out.problems.append(f"{actor}: {need / GB:.1f} GB > {lay.gpu_bytes / GB:.1f} GB of one GPU")
        if lay.engine == "vllm" and lay.rollout_device == "cuda" and lay.gpu_bytes:
            eb = _bytes(lay.engine_dtype or lay.param_dtype)
            least = shape.parameters() * eb + lay.seq_len * shape.kv_bytes_per_token(eb)
            if least > lay.engine_memory_fraction * lay.gpu_bytes:
                out.problems.append(f"rollout worker: vLLM's {lay.engine_memory_fraction:.2f} of the GPU "
                                    f"({lay.engine_memory_fraction * lay.gpu_bytes / GB:.1f} GB) < weights and one "
                                    f"{lay.seq_len}-token episode ({least / GB:.1f} GB)")
        host = out.total("learner rank", "host")
        if lay.host_bytes and host > lay.host_bytes:
            out.problems.append(f"learner rank: {host / GB:.1f} GB of host memory (offloaded state, publish buffer) > "
                                f"{lay.host_bytes / GB:.1f} GB")
    if out.problems:
        out.advice = advice(out)
    return out


def advice(p: Plan) -> List[str]:
    """The config keys that shrink what does not fit, most effective first."""
    lay, keys = p.layout, []
    micro = "trainer.max_tokens_per_micro_batch" if lay.max_tokens_per_micro_batch > 0 else "trainer.micro_batch_size"
    host_short = any("host memory" in x for x in p.problems)
    if host_short and lay.learner_device != "cuda":  # every process on one machine: fewer of them, smaller batches
        keys += ["rollout.num_workers", "rollout.max_batch_size", micro]
        if not lay.gradient_checkpointing:
            keys.append("trainer.gradient_checkpointing=true")
        return keys
    if any(x.startswith("learner") for x in p.problems):
        if not lay.lora_rank:
            keys.append("trainer.num_learners (shards parameters, gradients and AdamW state)")
            keys.append("trainer.lora.rank (trains adapters only)")
        if not lay.gradient_checkpointing:
            keys.append("trainer.gradient_checkpointing=true")
        if lay.learner_device == "cuda" and not lay.cpu_offload and lay.num_learners > 1:
            keys.append("trainer.cpu_offload=true")  # a group's option
        keys.append(micro)
    if any(x.startswith("rollout") for x in p.problems):
        keys += ["rollout.max_batch_size", "rollout.max_total_tokens"]
    if any(x.startswith("reference") for x in p.problems):
        keys.append("trainer.kl_coef=0 (no reference model)")
    return keys


def table(p: Plan) -> str:
    s, lay = p.shape, p.layout
    lines = [f"model: {s.parameters() / 1e9:.2f}B parameters ({s.layers} layers, hidden {s.hidden}, vocab {s.vocab}); "
             f"{lay.num_learners} learner rank(s) on {lay.learner_device}, params {lay.param_dtype}, compute {lay.compute_dtype}"
             + (f", LoRA rank {lay.lora_rank}" if lay.lora_rank else "")
             + (", CPU offload" if lay.cpu_offload else "") + (", gradient checkpointing" if lay.gradient_checkpointing else ""),
             f"{'actor':<16} {'part':<38} {'device':<6} {'GB':>9}"]
    for actor in ("learner rank", "reference", "rollout worker"):
        rows = [i for i in p.items if i.actor == actor]
        for i in rows:
            lines.append(f"{actor:<16} {i.part:<38} {i.device:<6} {i.bytes / GB:>9.3f}")
        for dev in ("gpu", "host"):
            t = p.total(actor, dev)
            if t:
                lines.append(f"{actor:<16} {'= per ' + actor + ' (' + dev + ')':<38} {dev:<6} {t / GB:>9.3f}")
    cap = [f"GPU {lay.gpu_bytes / GB:.0f} GB" if lay.gpu_bytes else "GPU memory unknown (plan.gpu_memory_gb)",
           f"host {lay.host_bytes / GB:.0f} GB" if lay.host_bytes else "host memory unknown (plan.host_memory_gb)"]
    lines.append("devices: " + ", ".join(cap))
    lines.append("fits" if p.fits else "does not fit: " + "; ".join(p.problems))
    if p.advice:
        lines.append("change: " + ", ".join(p.advice))
    return "\n".join(lines)
