"""Learner: holds the trainable policy and its optimizer; takes the warm-start and GRPO steps and
publishes each new version of the weights once.

With `trainer.num_learners` = 1 it is the run's one learner, its model whole. Above 1 each actor is
one rank of a learner group (actors/learner_group.py): the policy, its AdamW state and the frozen
reference model are sharded over the ranks with FSDP2 (orchestra_ray/policy/sharding.py), every
rank takes its share of each batch, and rank 0 gathers and publishes each version whole.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import ray

from actors.collective_transport import CONCURRENCY_GROUPS, TRANSPORT, CollectiveSender
from actors.common import ActorResources, quiet_torch_process
from actors.weight_transport import empty_packed, flatten_parameters, pack_state, publish_packed, unpack_state
from orchestra_ray.checkpoint import check_resumable
from orchestra_ray.config import OrchestraConfig, TrainerConfig, WeightsConfig
from orchestra_ray.grpo.policy_update import SupervisedRun, grpo_update, reference_logprobs
from orchestra_ray.policy import lora, sharding
from orchestra_ray.policy.safe_load import torch_load
from orchestra_ray.policy.tiny_model import load_policy
from orchestra_ray.rollout.sample import TrainBatch

SHARDED = "dcp"  # a checkpoint's sharded model and optimizer state (any number of ranks loads it)
LEARNER_STATE = "learner.pt"  # RNG states and version
LEGACY_OPTIMIZER = "optimizer.pt"  # checkpoints of single learners before DCP: optimizer, RNGs, version


@dataclass(frozen=True)
class LearnerSpec:
    """What a learner is built from: the policy it starts from, the `trainer` section (its
    hyperparameters and group layout), the policy's dtype and device, the run's seed, and what each
    rank asks Ray for."""

    policy_path: str
    trainer: TrainerConfig
    dtype: str
    device: str
    seed: int
    resources: ActorResources
    weights: WeightsConfig = field(default_factory=WeightsConfig)  # how rank 0 sends each version

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, policy_path: str) -> "LearnerSpec":
        t = copy.deepcopy(cfg.trainer)
        return cls(policy_path, t, cfg.policy.dtype, cfg.policy.device, cfg.run.seed,
                   ActorResources(t.num_cpus, t.num_gpus, dict(t.resources)), copy.deepcopy(cfg.weights))


@ray.remote(concurrency_groups=CONCURRENCY_GROUPS)
class Learner:
    def __init__(self, spec: LearnerSpec, weight_store, rank: int = 0, world: int = 1):
        import torch

        quiet_torch_process(spec.trainer.torch_threads)
        torch.manual_seed(spec.seed)
        self.cfg, self.spec, self.rank, self.world = spec.trainer, spec, rank, world
        # In a group rank 0 loads the policy on the host and the others build it on the meta device
        # (no memory); sharding moves each rank's 1/N to its device, then rank 0 sends the values.
        if rank == 0:
            self.lm, self.tokenizer = load_policy(spec.policy_path, spec.dtype, spec.device if world == 1 else "cpu")
        else:
            self.lm, self.tokenizer = sharding.empty_policy(spec.policy_path, spec.dtype), None
        lc = self.cfg.lora
        self.lora = lc.rank > 0
        self.adapter_only = self.lora and lc.publish == "adapter"  # versions are the factors alone
        if self.lora:  # before sharding: the adapters are sharded with their layers
            self.lm = lora.apply_lora(self.lm, lc.rank, lc.alpha, lc.dropout, lc.target_modules)
        if self.cfg.gradient_checkpointing:
            # non-reentrant: the reentrant kind re-runs FSDP's hooks out of order
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lm.eval()
        self.store = weight_store
        self.version = -1
        # The weights change only under this lock (steps, restores, publishing), so that rank 0 can
        # hand the current version to a joining rollout worker from its transport thread meanwhile.
        self.weights_lock = threading.RLock()
        w = spec.weights
        self.shared = None  # (version, [ref]): the current version in the object store, once asked for
        self.sender = CollectiveSender(weight_store, w.bucket_mb, w.timeout_s, w.shared_memory) if w.transport == "collective" and rank == 0 else None
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.reference = None
        self.sft: Optional[SupervisedRun] = None  # the warm start under way
        self.busy_s = 0.0
        self.gathered = None  # the version rank 0's buffer holds
        self.adapter_gathered = None  # the version its adapter buffer holds (trainer.lora.publish=adapter)
        self.model = self.optimizer = self.packed = None
        if world == 1:
            # On CPU the parameters live in the buffer that is published: no packing at each version
            # (with LoRA the published weights are merged ones, collected into a buffer of their own).
            if self.lora:
                self._layout()
            else:
                flatten_parameters(self.lm, self.sender.allocate if self.sender else None)
            self.model = self.lm
            self.optimizer = self._optimizer(spec.trainer.lr)

    # ---- the group (world > 1) -------------------------------------------------------------------
    def address(self) -> Tuple[str, int]:
        """Where rank 0 listens for the process group: this node's address and a free port."""
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def join(self, address: str, port: int) -> int:
        """Joins the process group and shards the policy; rank 0 keeps the buffer it publishes from."""
        self.mesh = sharding.join_group(self.rank, self.world, address, port, self.cfg.collective_timeout_s,
                                        "cuda" if self.spec.device.startswith("cuda") else "cpu")
        self._layout()  # before sharding: whole shapes, tied entries once
        self.model = self._shard(self.lm)
        self.optimizer = self._optimizer(self.cfg.lr)
        return os.getpid()

    def _shard(self, lm):
        """`lm` (whole on rank 0, on the meta device elsewhere) sharded over the group, with rank 0's values."""
        import torch

        full = dict(lm.state_dict()) if self.rank == 0 else None  # keeps rank 0's whole tensors until sent
        root = sharding.shard(lm, self.mesh, self.cfg.mixed_precision, self.cfg.cpu_offload)
        sharding.materialize(lm, full, torch.device("cpu") if self.cfg.cpu_offload else root.compute_device)
        return root

    def _optimizer(self, lr: float):
        import torch

        trainable = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: the adapters only
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=self.cfg.weight_decay)

    def _layout(self) -> None:
        """What each version is collected into: the entries to gather (tied ones once), and on rank 0
        the buffer published under the base model's names, plus the adapter factors apart."""
        import numpy as np

        self.names = sharding.entry_names(self.lm)
        published, factors = lora.split_entries(self.names)
        self.factor_names = factors
        if self.rank == 0:
            state = self.lm.state_dict()
            self.packed = empty_packed([(lora.published_name(n), state[n]) for n in published],
                                       None if self.adapter_only or self.sender is None else self.sender.allocate)
            if self.adapter_only:  # the factors are gathered straight into the buffer versions go out in
                self.adapter = empty_packed([(n, state[n]) for n in factors], self.sender.allocate if self.sender else None)
                self.factors = unpack_state(self.adapter)
            else:
                self.factors = {n: np.zeros(tuple(state[n].shape), np.float32) for n in factors}
            self.scaling = lora.scalings(self.lm) if self.lora else {}

    def _gather_adapter(self) -> Optional[Dict]:
        """The adapter factors alone, packed as they are published (rank 0; the base never changes,
        so a version costs the adapter's bytes)."""
        if self.gathered != self.version and self.adapter_gathered != self.version:
            self._collect(self.factor_names, self.factors if self.rank == 0 else None)
            self.adapter_gathered = self.version
        return self.adapter if self.rank == 0 else None

    def _collect(self, names: Sequence[str], targets: Optional[Dict]) -> None:
        """The whole values of entries `names` into rank 0's arrays `targets` (every rank takes part)."""
        if self.world == 1:
            state = self.lm.state_dict()
            for n in names:
                targets[n][...] = state[n].detach().float().cpu().numpy()
        else:
            sharding.gather_state(self.lm, names, targets, int(self.cfg.publish_bucket_mb * 2**20))

    def _gather(self) -> Optional[Dict]:
        """The whole current weights on rank 0 (base name -> array views into its publish buffer;
        with LoRA merged with the adapters); a version already gathered (published, then saved) is
        not gathered again."""
        weights = unpack_state(self.packed) if self.rank == 0 else None
        if self.gathered != self.version:
            targets = None
            if self.rank == 0:
                targets = {**self.factors, **{n: weights[lora.published_name(n)] for n in self.names if n not in self.factors}}
            self._collect(self.names, targets)
            if self.rank == 0 and self.lora:
                lora.merge_into(weights, self.factors, self.scaling)
            self.gathered = self.version
        return weights

    # ---- the learner interface ------------------------------------------------------------------
    def pid(self) -> int:
        return os.getpid()

    def publish(self) -> int:
        with self.weights_lock:
            self.version += 1
            packed = self._current_packed()
            if self.rank != 0:
                return self.version
            if self.sender is not None and self.sender.send(packed, self.version):
                me = ray.get_runtime_context().current_actor
                return ray.get(self.store.publish.remote(self.version, [], me))
            return publish_packed(self.store, packed, self.version)

    def _current_packed(self) -> Optional[Dict]:
        """The current weights, packed as they are sent (rank 0; the other ranks take part in the gather)."""
        if self.world == 1 and not self.lora:
            return pack_state(self.lm)
        if self.adapter_only:
            return self._gather_adapter()
        self._gather()
        return self.packed

    @ray.method(concurrency_group=TRANSPORT)
    def current_weights(self) -> Tuple[int, List[ray.ObjectRef]]:
        """(version, [ref]) of the published weights through the object store, for a rollout worker that
        did not receive them by broadcast (collective transport; rank 0). One copy per version serves
        every such worker; the first to ask waits while a step is changing the weights."""
        with self.weights_lock:
            if self.shared is None or self.shared[0] != self.version:
                packed = (pack_state(self.lm) if self.world == 1 and not self.lora
                          else self.adapter if self.adapter_only else self.packed)
                self.shared = (self.version, [ray.put(packed)])
            return self.shared

    def current_version(self) -> int:
        return self.version

    def warm_start(self, demos: Sequence[dict], epochs: int, batch_size: int, lr: float, seed: int) -> List[float]:
        """The whole supervised stage in one call: its loss per epoch."""
        return self.warm_start_run(self.warm_start_begin(demos, epochs, batch_size, lr, seed))

    def warm_start_begin(self, demos: Sequence[dict], epochs: int, batch_size: int, lr: float, seed: int) -> int:
        """Starts the supervised stage with its own optimizer (GRPO's starts fresh after it): its batches."""
        self.sft = SupervisedRun(self.model, self._optimizer(lr), demos, epochs=epochs, batch_size=batch_size,
                                 max_grad_norm=self.cfg.max_grad_norm, seed=seed, rank=self.rank, world=self.world)
        return len(self.sft.batches)

    def warm_start_run(self, batches: int) -> Optional[List[float]]:
        """The stage's next `batches` batches: its loss per epoch once every batch is taken, else None."""
        with self.weights_lock:
            self.gathered = self.adapter_gathered = None
            if not self.sft.run(batches):
                return None
            losses, self.sft = self.sft.losses(), None
            return losses

    def train_step(self, batch: TrainBatch, ref_logprobs: Optional[Sequence[Sequence[float]]], temperature: float) -> Dict[str, float]:
        """PPO-clip steps on the kept samples' batch, then the new version published."""
        t0 = time.perf_counter()
        with self.weights_lock:
            stats = grpo_update(
                self.model, self.optimizer, batch, ref_logprobs,
                clip_low=self.cfg.clip_low, clip_high=self.cfg.clip_high, kl_coef=self.cfg.kl_coef,
                max_grad_norm=self.cfg.max_grad_norm, epochs=self.cfg.epochs, mini_batches=self.cfg.mini_batches,
                micro_batch_size=self.cfg.micro_batch_size, temperature=temperature, generator=self.generator,
                rank=self.rank, world=self.world, max_tokens_per_micro_batch=self.cfg.max_tokens_per_micro_batch,
            )
            t1 = time.perf_counter()
            stats["version"] = float(self.publish())
        stats["update_s"], stats["publish_s"] = t1 - t0, time.perf_counter() - t1
        return stats

    def save(self, path: str, with_optimizer: bool = True) -> str:
        """The policy in Hugging Face format under `path`/policy (written by rank 0 from the whole
        weights; with LoRA merged, and the adapter alone under `path`/adapter), and with `with_optimizer` the sharded model and optimizer state through DCP under
        `path`/dcp (every rank writes its shards: on several nodes `path` is on a shared file system)
        with the RNG states and version."""
        import torch

        policy_dir = os.path.join(path, "policy")
        if self.world == 1 and not self.lora:
            self.lm.save_pretrained(policy_dir)
        else:
            weights = self._gather()
            if self.rank == 0:
                # save_pretrained empties the dict it is given: it gets copies made for it.
                self.lm.save_pretrained(policy_dir, state_dict=sharding.full_state(weights, self._dtype()))
                if self.lora:
                    lora.save_adapter(self.lm, self.factors, os.path.join(path, "adapter"))
        if self.rank == 0:
            self.tokenizer.save_pretrained(policy_dir)
        if with_optimizer:
            sharding.save_sharded(self.lm, self.optimizer, os.path.join(path, SHARDED))
            if self.rank == 0:
                sharding.check_shards(os.path.join(path, SHARDED), self.world)
                torch.save({"torch_rng": torch.get_rng_state(), "generator": self.generator.get_state(),
                            "version": self.version, "num_learners": self.world}, os.path.join(path, LEARNER_STATE))
        return path

    def restore(self, path: str) -> int:
        """Loads a checkpoint written by `save` at any number of ranks (or a single learner's of
        earlier releases, at one rank) and publishes its weights (same version number)."""
        check_resumable(path, self.world)  # the driver checks first, before any actor starts
        with self.weights_lock:
            return self._restore(path)

    def _restore(self, path: str) -> int:
        self.gathered = self.adapter_gathered = None
        if os.path.isdir(os.path.join(path, SHARDED)):
            sharding.load_sharded(self.lm, self.optimizer, os.path.join(path, SHARDED))
            self._set_state(torch_load(os.path.join(path, LEARNER_STATE)))
            return self.publish()
        if self.lora:  # the base never changes: a policy-only checkpoint's news is its adapter
            factors = lora.load_adapter(os.path.join(path, "adapter")) if self.rank == 0 else None
            if self.world == 1:
                self.lm.load_state_dict(factors, strict=False)
            else:
                sharding.load_full(self.lm, factors, strict=False)
        else:
            loaded = self._load_hf(os.path.join(path, "policy"))
            if self.world == 1:
                self.lm.load_state_dict(loaded)
            else:
                sharding.load_full(self.lm, loaded)
        legacy = os.path.join(path, LEGACY_OPTIMIZER)
        if os.path.exists(legacy):  # the warm-start checkpoint holds the policy only
            state = torch_load(legacy)
            self.optimizer.load_state_dict(state["optimizer"])
            self._set_state(state)
        return self.publish()

    def _load_hf(self, policy_dir: str) -> Optional[Dict]:
        """The state dict of a Hugging Face folder (rank 0 only in a group: it broadcasts it)."""
        from transformers import AutoModelForCausalLM

        if self.rank != 0:
            return None
        return AutoModelForCausalLM.from_pretrained(policy_dir, dtype=self._dtype()).state_dict()

    def _set_state(self, state: Dict) -> None:
        import torch

        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        self.version = int(state["version"]) - 1

    def _dtype(self):
        import torch

        return getattr(torch, self.spec.dtype)

    # ---- the reference model on the group's ranks (world > 1) -----------------------------------
    def load_reference(self, policy_path: str) -> int:
        """The frozen policy of the KL term, sharded like the trained one."""
        ref = load_policy(policy_path, self.spec.dtype, "cpu")[0] if self.rank == 0 else \
            sharding.empty_policy(policy_path, self.spec.dtype)
        ref.requires_grad_(False)
        self.reference = self._shard(ref.eval())
        return os.getpid()

    def logprobs(self, batch: TrainBatch, temperature: float = 1.0) -> Dict[int, List[float]]:
        """Reference log-probs of this rank's share of the batch, by batch index."""
        t0 = time.perf_counter()
        try:
            return reference_logprobs(self.reference, batch.token_ids, self.cfg.micro_batch_size, temperature,
                                      batch.loss_masks, rank=self.rank, world=self.world,
                                      max_tokens=self.cfg.max_tokens_per_micro_batch)
        finally:
            self.busy_s += time.perf_counter() - t0

    def busy_seconds(self) -> float:
        return self.busy_s

    # ---- measurement (bench learner) ------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        """Starts this process's peak resident memory afresh, from what it holds now (Linux:
        /proc/self/clear_refs)."""
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.rss_at_reset = _status_bytes("VmRSS")

    def memory(self) -> List[Dict[str, float]]:
        """Bytes this rank holds of parameters, gradients and optimizer state (its shards), and its
        resident memory now and at its peak since `reset_peak_memory` (one entry per rank)."""
        import torch

        def local(t):
            return t.to_local() if hasattr(t, "to_local") else t

        def nbytes(ts):
            return float(sum(local(t).numel() * local(t).element_size() for t in ts))

        params = list(self.model.parameters())
        state = [v for st in self.optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0]
        return [{"rank": float(self.rank), "param_bytes": nbytes(params), "grad_bytes": nbytes(p.grad for p in params if p.grad is not None),
                 "optimizer_bytes": nbytes(state), "rss_at_reset_bytes": getattr(self, "rss_at_reset", 0.0),
                 "peak_rss_bytes": _status_bytes("VmHWM")}]


def _status_bytes(key: str) -> float:
    """A memory figure of this process from /proc/self/status (reported in kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    return 0.0

