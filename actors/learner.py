"""Learner: holds the trainable policy and its optimizer; takes the warm-start and GRPO steps and
publishes each new version of the weights once."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import ray

from actors.common import ActorResources, quiet_torch_process
from actors.weight_transport import flatten_parameters, publish_model
from orchestra_ray.config import OrchestraConfig, TrainerConfig
from orchestra_ray.grpo.policy_update import grpo_update, sft_update
from orchestra_ray.policy.tiny_model import load_policy
from orchestra_ray.rollout.sample import TrainBatch


@dataclass(frozen=True)
class LearnerSpec:
    """What a learner is built from: the policy it starts from, the `trainer` section (its
    hyperparameters), the policy's dtype and device, the run's seed, and what it asks Ray for."""

    policy_path: str
    trainer: TrainerConfig
    dtype: str
    device: str
    seed: int
    resources: ActorResources

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, policy_path: str) -> "LearnerSpec":
        t = copy.deepcopy(cfg.trainer)
        return cls(policy_path, t, cfg.policy.dtype, cfg.policy.device, cfg.run.seed,
                   ActorResources(t.num_cpus, t.num_gpus, dict(t.resources)))


@ray.remote
class Learner:
    def __init__(self, spec: LearnerSpec, weight_store):
        import torch

        quiet_torch_process(spec.trainer.torch_threads)
        torch.manual_seed(spec.seed)
        self.cfg = spec.trainer
        self.model, self.tokenizer = load_policy(spec.policy_path, spec.dtype, spec.device)
        self.model.eval()
        # On CPU the parameters live in the buffer that is published: no packing at each version.
        flatten_parameters(self.model)
        self.store = weight_store
        self.version = -1
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.optimizer = self._optimizer(spec.trainer.lr)

    def _optimizer(self, lr: float):
        import torch

        return torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.cfg.weight_decay)

    def publish(self) -> int:
        self.version += 1
        return publish_model(self.store, self.model, self.version)

    def current_version(self) -> int:
        return self.version

    def warm_start(self, demos: Sequence[dict], epochs: int, batch_size: int, lr: float, seed: int) -> List[float]:
        """Supervised stage with its own optimizer; the GRPO optimizer starts fresh afterwards."""
        losses = sft_update(self.model, self._optimizer(lr), demos, epochs=epochs, batch_size=batch_size,
                            max_grad_norm=self.cfg.max_grad_norm, seed=seed)
        return losses

    def train_step(self, batch: TrainBatch, ref_logprobs: Optional[Sequence[Sequence[float]]], temperature: float) -> Dict[str, float]:
        """PPO-clip steps on the kept samples' batch, then the new version published."""
        t0 = time.perf_counter()
        stats = grpo_update(
            self.model, self.optimizer, batch, ref_logprobs,
            clip_low=self.cfg.clip_low, clip_high=self.cfg.clip_high, kl_coef=self.cfg.kl_coef,
            max_grad_norm=self.cfg.max_grad_norm, epochs=self.cfg.epochs, mini_batches=self.cfg.mini_batches,
            micro_batch_size=self.cfg.micro_batch_size, temperature=temperature, generator=self.generator,
        )
        t1 = time.perf_counter()
        stats["version"] = float(self.publish())
        stats["update_s"], stats["publish_s"] = t1 - t0, time.perf_counter() - t1
        return stats

    def save(self, path: str, with_optimizer: bool = True) -> str:
        """Policy in Hugging Face format (+ optimizer and RNG state) under `path`."""
        import torch

        self.model.save_pretrained(os.path.join(path, "policy"))
        self.tokenizer.save_pretrained(os.path.join(path, "policy"))
        if with_optimizer:
            torch.save({"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                        "generator": self.generator.get_state(), "version": self.version},
                       os.path.join(path, "optimizer.pt"))
        return path

    def restore(self, path: str) -> int:
        """Load a checkpoint written by `save` and publish its weights (same version number)."""
        import torch
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(os.path.join(path, "policy"), dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(loaded.state_dict())
        opt_path = os.path.join(path, "optimizer.pt")
        if os.path.exists(opt_path):  # the warm-start checkpoint holds the policy only
            state = torch.load(opt_path, weights_only=False)
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            self.generator.set_state(state["generator"])
            self.version = int(state["version"]) - 1
        return self.publish()


def start_learner(spec: LearnerSpec, weight_store) -> "ray.actor.ActorHandle":
    """The run's learner, publishing to `weight_store`; the driver sees only this handle's methods."""
    return Learner.options(**spec.resources.options()).remote(spec, weight_store)
