"""A policy sharded over the ranks of a learner group with FSDP2 (`fully_shard`), and what moves it
whole: the bucketed gather of a version to rank 0, and DCP checkpoints of model and optimizer.

Each decoder layer is one FSDP unit and the root holds the rest (embeddings, final norm, output
projection): a layer's parameters are all-gathered just before it runs and freed after, gradients
are reduce-scattered, so a rank holds 1/N of the parameters, gradients and AdamW state. Gradients
are summed across ranks, not averaged: each rank's loss is already divided by the token count of
the whole mini-batch (grpo/policy_update.py), so the sum is the single-learner gradient.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from orchestra_ray.config import MIXED_PRECISION
from orchestra_ray.policy.safe_load import dcp_reader_and_planner


class PositionLogits(torch.nn.Module):
    """A causal LM's logits at chosen (row, column) positions, as one module: the root FSDP unit.

    Sharded, the root's parameters are gathered by hooks that run when the root is called, so the
    decoder and the output projection cannot be called one by one (as the single learner does to
    project only the policy's tokens); this module does both inside one call. Position t is
    predicted from t-1."""

    def __init__(self, lm, compute_device: "torch.device"):
        super().__init__()
        self.lm = lm  # the only submodule: state-dict names stay the LM's, under "lm."
        self.compute_device = compute_device  # where inputs go (parameters may be offloaded to the host)

    def forward(self, ids: torch.Tensor, attn: Optional[torch.Tensor], rows: torch.Tensor, cols: torch.Tensor,
                **kw) -> torch.Tensor:
        # `kw`: a packed row's position ids and sequence bounds (grpo/packing.py), `attn` None
        split = split_head(self.lm)
        if split is None:  # logits post-processed: computed whole, then picked
            return self.lm(input_ids=ids, attention_mask=attn, **kw).logits[rows, cols - 1]
        decoder, head = split
        return head(decoder(input_ids=ids, attention_mask=attn, **kw).last_hidden_state[rows, cols - 1])


def split_head(model):
    """(decoder, output projection) of a causal LM whose logits are exactly the projection of the
    decoder's last hidden states (Qwen3, Llama, ...), or None for one that post-processes them."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if head is None or decoder is None or decoder is model:
        return None
    return decoder, head


def backend() -> str:
    """gloo for CPU tensors, NCCL for CUDA ones (a CPU-only torch has no NCCL)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def join_group(rank: int, world: int, address: str, port: int, timeout_s: float, device_type: str = "cpu"):
    """This process as `rank` of a process group of `world` (rank 0 listening at address:port);
    every collective fails after `timeout_s` instead of waiting forever. Returns the device mesh
    (`device_type` cpu or cuda: where the shards live)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group(backend(), init_method=f"tcp://{address}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    return init_device_mesh(device_type, (world,))


def compute_device(mesh) -> "torch.device":
    """The device this rank computes on: its GPU under a CUDA mesh, else the CPU."""
    if mesh.device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def decoder_layers(lm) -> Sequence[torch.nn.Module]:
    """The repeated blocks of a Hugging Face causal LM (Qwen3, Llama, ...)."""
    decoder = getattr(lm, lm.base_model_prefix, None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(lm).__name__}: no decoder layers at {lm.base_model_prefix}.layers to shard")
    return layers


def empty_policy(path: str, dtype: str):
    """The architecture of the Hugging Face policy at `path` on the meta device (no memory): a rank
    other than 0 shards it, then receives its values from rank 0 (`materialize`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=getattr(torch, dtype))


def entry_names(lm) -> List[str]:
    """State-dict names, each tensor once (tied embeddings under the first name), in order; the
    same on a meta-device model, where data pointers cannot tell tensors apart."""
    seen, out = set(), []
    for name, t in lm.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out.append(name)
    return out


def materialize(lm, full: Optional[Dict[str, torch.Tensor]], device: "torch.device") -> None:
    """After `shard`: a rank built on the meta device (`full` None) gets storage on `device`, then
    every rank receives rank 0's values: its whole state dict (`full`, taken before sharding) and its
    buffers, non-persistent ones (rotary frequencies) included."""
    import torch.distributed as dist

    if full is None:
        lm.to_empty(device=device)
    for b in lm.buffers():
        dist.broadcast(b, src=0)
    load_full(lm, full)


def shard(lm, mesh, mixed_precision: str = "none", cpu_offload: bool = False) -> PositionLogits:
    """`lm` sharded in place (one unit per decoder layer, the root wrapping it); returns the root.
    The root stays gathered between forward and backward (FSDP2's default for it)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
    mp = MixedPrecisionPolicy() if mixed_precision == "none" else \
        MixedPrecisionPolicy(param_dtype=getattr(torch, mixed_precision), reduce_dtype=torch.float32)
    # Pinned host memory needs an accelerator; a CPU-only run offloads to plain memory.
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload else OffloadPolicy()
    opts = dict(mesh=mesh, mp_policy=mp, offload_policy=offload)
    for layer in decoder_layers(lm):
        fully_shard(layer, **opts)
    root = PositionLogits(lm, compute_device(mesh))
    fully_shard(root, **opts)
    for m in root.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # a sum (see the module's docstring)
            m.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
    return root


def _rows(d0: int, rank: int, world: int) -> int:
    """Rows of a dim-0 shard on `rank` (torch.chunk's split, which FSDP2 uses)."""
    per = math.ceil(d0 / world)
    return max(0, min(per, d0 - rank * per))


def _dims(t) -> tuple:
    """(rows, elements per row) of a tensor sharded on dim 0."""
    d0 = t.shape[0]
    return d0, t.numel() // max(1, d0)


def gather_state(lm, names: Sequence[str], targets: Optional[Mapping[str, np.ndarray]], bucket_bytes: int) -> int:
    """Writes the whole value of each state-dict entry `names` of the sharded `lm` into
    `targets[name]` on rank 0 (float32 there for floating point; the other ranks pass None). Entries
    travel in buckets of about `bucket_bytes`, one gather to rank 0 per bucket: rank 0 holds its
    targets plus one bucket from each rank, the others one bucket. Returns the number of gathers."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    rank, world = dist.get_rank(), dist.get_world_size()
    state = lm.state_dict()
    gathers = 0

    def flush(bucket: List[str]) -> None:
        nonlocal gathers
        parts = []
        for name in bucket:
            local = state[name].to_local().reshape(-1)
            d0, inner = _dims(state[name])
            if local.numel() != _rows(d0, rank, world) * inner:
                raise RuntimeError(f"{name}: shard of {tuple(local.shape)} is not a dim-0 chunk of {tuple(state[name].shape)}")
            parts.append(torch.nn.functional.pad(local, (0, math.ceil(d0 / world) * inner - local.numel())))
        send = torch.cat(parts)
        got = [torch.empty_like(send) for _ in range(world)] if rank == 0 else None
        dist.gather(send, got, dst=0)
        gathers += 1
        if rank != 0:
            return
        offset = 0
        for name in bucket:
            d0, inner = _dims(state[name])
            per_rows = math.ceil(d0 / world)
            out = targets[name].reshape(d0, inner)
            for r in range(world):
                n = _rows(d0, r, world)
                chunk = got[r][offset : offset + n * inner].reshape(n, inner)
                out[r * per_rows : r * per_rows + n] = chunk.detach().float().cpu().numpy() if chunk.is_floating_point() else chunk.cpu().numpy()
            offset += per_rows * inner

    bucket: List[str] = []
    size, dtype = 0, None
    for name in names:
        t = state[name]
        if not isinstance(t, DTensor):  # replicated (a buffer): every rank has it whole
            if rank == 0:
                v = t.detach().cpu()
                np.copyto(targets[name], (v.float() if v.is_floating_point() else v).numpy().reshape(targets[name].shape))
            continue
        if bucket and (t.dtype != dtype or size >= bucket_bytes):
            flush(bucket)
            bucket, size = [], 0
        bucket.append(name)
        dtype = t.dtype
        d0, inner = _dims(t)
        size += math.ceil(d0 / world) * inner * t.element_size() * world
    if bucket:
        flush(bucket)
    return gathers


def full_state(targets: Mapping[str, np.ndarray], dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """Torch tensors (copies, in `dtype` for floating point) of gathered arrays: a state dict to save."""
    return {k: (torch.from_numpy(np.array(v)).to(dtype) if v.dtype.kind == "f" else torch.from_numpy(np.array(v)))
            for k, v in targets.items()}


def check_shards(path: str, world: int) -> None:
    """Every rank's shard file is in the DCP folder `path` as rank 0 sees it: on several nodes a
    folder that is not on shared storage would otherwise make a checkpoint that cannot be resumed."""
    names = os.listdir(path)
    missing = [r for r in range(world) if not any(n.startswith(f"__{r}_") for n in names)]
    if missing:
        raise RuntimeError(f"{path}: no shards of learner ranks {missing} here; the checkpoint folder (run.root) "
                           "must be on storage every learner node shares")


def _single() -> bool:
    """No process group: one process reads and writes DCP checkpoints alone."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def save_sharded(lm, optimizer, path: str) -> None:
    """Model and optimizer state through DCP: each rank writes its shards, with names (not ranks) as
    keys, so any number of ranks can load them. A single process (no group) writes whole tensors.
    An optimizer that has not stepped yet is left out: reading its state would create it (torch
    takes a zero step), and its first real update would then be scaled as a second one."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer.state:
        model_sd, optim_sd = get_state_dict(lm, optimizer)
        state = {"model": model_sd, "optimizer": optim_sd}
    else:
        state = {"model": get_model_state_dict(lm)}
    dcp.save(state, checkpoint_id=path, no_dist=_single())


def load_sharded(lm, optimizer, path: str) -> None:
    """What `save_sharded` wrote, at this process's number of ranks (the same or another)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

    reader, planner = dcp_reader_and_planner(path)  # data only: a checkpoint never runs code
    saved = reader.read_metadata().state_dict_metadata
    if not any(k.startswith("optimizer.") for k in saved):  # saved before its first step
        state = {"model": get_model_state_dict(lm)}
        dcp.load(state, storage_reader=reader, planner=planner, no_dist=_single())
        set_model_state_dict(lm, state["model"])
        return
    model_sd, optim_sd = get_state_dict(lm, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, storage_reader=reader, planner=planner, no_dist=_single())
    set_state_dict(lm, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_full(lm, full: Optional[Dict[str, torch.Tensor]], strict: bool = True) -> None:
    """A whole state dict (rank 0 passes it, the others None) into the sharded `lm`; with `strict`
    False it may hold some entries only (a LoRA adapter's factors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(lm, full or {}, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                  strict=strict))
