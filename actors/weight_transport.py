"""Weight transport through the Ray object store.

After each update the learner puts its weights into the object store once (numpy arrays, read
zero-copy by every process on a node) and publishes (version, ref) to the `WeightStore`. Rollout
workers and the reference model pull the latest version before their next group.

Entries of the state dict that share one tensor (tied input and output embeddings) are sent once,
under the first name: a receiver of the same architecture shares them too, so loading that name
fills both, and neither the object store nor any receiver copies those bytes twice.
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
    """The state dict as numpy arrays (float32 for floating point), each shared tensor once."""
    out: Dict[str, np.ndarray] = {}
    seen = set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if key in seen:
            continue
        seen.add(key)
        t = v.detach().cpu()
        out[k] = t.float().numpy() if t.dtype.is_floating_point else t.numpy()
    return out


def publish_model(store, model, version: int) -> int:
    ref = ray.put(state_to_numpy(model))
    return ray.get(store.publish.remote(version, [ref]))


def pull_if_newer(store, current: int) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
    version, refs = ray.get(store.latest.remote())
    if version <= current or not refs:
        return None
    return version, ray.get(refs[0])
