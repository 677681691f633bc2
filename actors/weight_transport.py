"""Weight transport through the Ray object store.

After each update the learner puts its weights into the object store once (numpy arrays, read
zero-copy by every process on a node) and publishes (version, ref) to the `WeightStore`. Rollout
workers and the reference model pull the latest version before their next group.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import ray


@ray.remote(num_cpus=0)
class WeightStore:
    def __init__(self):
        self.version = -1
        self.refs: List[ray.ObjectRef] = []

    def publish(self, version: int, refs: List[ray.ObjectRef]) -> int:
        # The ref travels inside a list so that Ray hands over the reference, not the weights.
        if version <= self.version:
            raise ValueError(f"weight version {version} is not newer than {self.version}")
        self.version, self.refs = version, refs
        return version

    def latest(self) -> Tuple[int, List[ray.ObjectRef]]:
        return self.version, self.refs


def state_to_numpy(model) -> Dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy() if v.dtype.is_floating_point else v.detach().cpu().numpy()
            for k, v in model.state_dict().items()}


def publish_model(store, model, version: int) -> int:
    ref = ray.put(state_to_numpy(model))
    return ray.get(store.publish.remote(version, [ref]))


def pull_if_newer(store, current: int) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
    version, refs = ray.get(store.latest.remote())
    if version <= current or not refs:
        return None
    return version, ray.get(refs[0])
