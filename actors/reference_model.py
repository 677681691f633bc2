"""ReferenceModel: log-probs under the frozen initial policy (the warm-start checkpoint), for the KL term."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List

import ray

from actors.common import ActorResources, quiet_torch_process
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.grpo.policy_update import reference_logprobs
from orchestra_ray.policy.tiny_model import load_policy
from orchestra_ray.rollout.sample import TrainBatch


@dataclass(frozen=True)
class ReferenceSpec:
    """The frozen policy to load, how it computes (the learner's dtype, device, threads and micro
    batches) and what it asks Ray for (the learner's resources)."""

    policy_path: str
    dtype: str
    device: str
    torch_threads: int
    micro_batch_size: int
    resources: ActorResources
    max_tokens_per_micro_batch: int = 0  # > 0: packed micro-batches of this many tokens (grpo/packing.py)

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, policy_path: str) -> "ReferenceSpec":
        t = cfg.trainer
        return cls(policy_path, cfg.policy.dtype, cfg.policy.device, t.torch_threads, t.micro_batch_size,
                   ActorResources(t.num_cpus, t.num_gpus, dict(t.resources)), t.max_tokens_per_micro_batch)


# Its only state is the frozen weights it loads at start, and log-probs are a pure function of
# them: a crashed reference model restarts, reloads and answers the retried call.
@ray.remote(max_restarts=3, max_task_retries=3)
class ReferenceModel:
    def __init__(self, spec: ReferenceSpec):
        quiet_torch_process(spec.torch_threads)
        self.model, _ = load_policy(spec.policy_path, spec.dtype, spec.device)
        self.model.eval()
        self.micro_batch_size, self.max_tokens = spec.micro_batch_size, spec.max_tokens_per_micro_batch
        self.busy_s = 0.0

    def pid(self) -> int:
        return os.getpid()

    def logprobs(self, batch: TrainBatch, temperature: float = 1.0) -> List[List[float]]:
        """Per-token log-probs of the batch's sequences where their loss masks are 1 (0 elsewhere)."""
        t0 = time.perf_counter()
        try:
            got = reference_logprobs(self.model, batch.token_ids, self.micro_batch_size, temperature, batch.loss_masks,
                                     max_tokens=self.max_tokens)
            return [got[i] for i in range(len(batch))]
        finally:
            self.busy_s += time.perf_counter() - t0

    def busy_seconds(self) -> float:
        """Seconds spent computing log-probs since this process started."""
        return self.busy_s


def start_reference(spec: ReferenceSpec) -> "ray.actor.ActorHandle":
    return ReferenceModel.options(**spec.resources.options()).remote(spec)
