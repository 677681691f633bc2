"""The two ends of a weight sync, for measuring it: a publishing learner and syncing rollout
workers that hold randomly initialised models of one architecture and move weights through the
same transport and engine code as training (`publish_model` or the collective sender, `pull_if_newer`,
`HFEngine.load_weights`)."""

from __future__ import annotations

import time
from typing import Dict

import ray

from actors.collective_transport import CONCURRENCY_GROUPS, CollectiveReceiver, CollectiveSender, ReceivesWeights
from actors.common import quiet_torch_process
from actors.weight_transport import flatten_parameters, pack_state, publish_model, pull_if_newer


def random_model(config: Dict, seed: int):
    """A causal LM built from a Hugging Face config dict, random weights in float32, no download."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(**config)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


@ray.remote
class SyncSource:
    def __init__(self, config: Dict, weight_store, torch_threads: int = 1, collective: bool = False):
        quiet_torch_process(torch_threads)
        self.model = random_model(config, seed=0)
        self.sender = CollectiveSender(weight_store, bucket_mb=64.0, timeout_s=60.0) if collective else None
        flatten_parameters(self.model, self.sender.allocate if collective else None)  # as the learner does
        self.store = weight_store
        self.version = -1

    def nbytes(self) -> int:
        """Bytes of one copy of the weights (tied tensors once)."""
        seen, total = set(), 0
        for t in self.model.state_dict().values():
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def first_value(self) -> float:
        return float(next(self.model.parameters()).detach().reshape(-1)[0])

    def publish(self) -> Dict[str, float]:
        import torch

        with torch.no_grad():  # a new version differs from the last, as after an optimizer step
            next(self.model.parameters()).add_(1.0)
        self.version += 1
        t0 = time.perf_counter()
        if self.sender is None:
            publish_model(self.store, self.model, self.version)
        elif self.sender.send(pack_state(self.model), self.version):  # as the learner's rank 0 does
            ray.get(self.store.publish.remote(self.version, []))
        else:
            raise RuntimeError(f"the broadcast of version {self.version} failed")
        return {"publish_s": time.perf_counter() - t0}


@ray.remote(concurrency_groups=CONCURRENCY_GROUPS)
class SyncTarget(ReceivesWeights):
    def __init__(self, config: Dict, weight_store, share_weights: bool = True, torch_threads: int = 1,
                 collective: bool = False):
        from orchestra_ray.policy.engine import HFEngine

        quiet_torch_process(torch_threads)
        self.engine = HFEngine(random_model(config, seed=1), pad_token_id=0, share_weights=share_weights)
        self.store = weight_store
        self.version = -1
        self.receiver = CollectiveReceiver() if collective else None
        if collective:  # as a rollout worker joins
            ray.get(weight_store.join_transport.remote(ray.get_runtime_context().current_actor))

    def ready(self) -> bool:
        return True

    def sync(self) -> Dict[str, float]:
        """Pull and load the newest version, as a rollout worker does before its next group."""
        t0 = time.perf_counter()
        update = pull_if_newer(self.store, self.version, self.receiver.take if self.receiver else None)
        t1 = time.perf_counter()
        if update is None:
            raise RuntimeError(f"no weights newer than version {self.version} were published")
        self.version, weights = update
        self.engine.load_weights(weights)
        t2 = time.perf_counter()
        return {"pull_s": t1 - t0, "load_s": t2 - t1, "version": self.version}

    def state(self) -> Dict:
        """The engine's weights as numpy arrays (what a transport delivered, for checks)."""
        return {k: v.detach().numpy().copy() for k, v in self.engine.model.state_dict().items()}

    def first_value(self) -> float:
        """A published change reaches the engine's model (checked by the benchmark)."""
        return float(next(self.engine.model.parameters()).detach().reshape(-1)[0])
