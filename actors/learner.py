"""Learner: holds the trainable policy and its optimizer; takes the warm-start and GRPO steps and
publishes each new version of the weights once."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Sequence

import ray

from actors.common import quiet_torch_process
from actors.weight_transport import flatten_parameters, publish_model
from orchestra_ray.grpo.policy_update import grpo_update, sft_update
from orchestra_ray.policy.tiny_model import load_policy


@ray.remote
class Learner:
    def __init__(self, policy_path: str, weight_store, trainer_cfg, dtype: str = "float32", device: str = "cpu", seed: int = 0):
        import torch

        quiet_torch_process(trainer_cfg.torch_threads)
        torch.manual_seed(seed)
        self.cfg = trainer_cfg
        self.model, self.tokenizer = load_policy(policy_path, dtype, device)
        self.model.eval()
        # On CPU the parameters live in the buffer that is published: no packing at each version.
        flatten_parameters(self.model)
        self.store = weight_store
        self.version = -1
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = self._optimizer(trainer_cfg.lr)

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

    def train_step(self, samples: Sequence[dict], ref_logprobs: Optional[Sequence[Sequence[float]]], temperature: float) -> Dict[str, float]:
        t0 = time.perf_counter()
        stats = grpo_update(
            self.model, self.optimizer, samples, ref_logprobs,
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
