"""ReferenceModel: log-probs under the frozen initial policy (the warm-start checkpoint), for the KL term."""

from __future__ import annotations

import os
import time
from typing import List, Optional, Sequence

import ray

from actors.common import quiet_torch_process
from orchestra_ray.grpo.policy_update import reference_logprobs
from orchestra_ray.policy.tiny_model import load_policy


# Its only state is the frozen weights it loads at start, and log-probs are a pure function of
# them: a crashed reference model restarts, reloads and answers the retried call.
@ray.remote(max_restarts=3, max_task_retries=3)
class ReferenceModel:
    def __init__(self, policy_path: str, dtype: str = "float32", device: str = "cpu", torch_threads: int = 1, micro_batch_size: int = 16):
        quiet_torch_process(torch_threads)
        self.model, _ = load_policy(policy_path, dtype, device)
        self.model.eval()
        self.micro_batch_size = micro_batch_size
        self.busy_s = 0.0

    def pid(self) -> int:
        return os.getpid()

    def logprobs(self, token_ids: Sequence[Sequence[int]], temperature: float = 1.0,
                 loss_masks: Optional[Sequence[Sequence[int]]] = None) -> List[List[float]]:
        """Per-token log-probs; with `loss_masks`, only where they are 1 (0 elsewhere)."""
        t0 = time.perf_counter()
        try:
            return reference_logprobs(self.model, token_ids, self.micro_batch_size, temperature, loss_masks)
        finally:
            self.busy_s += time.perf_counter() - t0

    def busy_seconds(self) -> float:
        """Seconds spent computing log-probs since this process started."""
        return self.busy_s
