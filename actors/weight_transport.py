"""Weight transport through the Ray object store (and the version record of every transport).

After each update the learner puts its weights into the object store once and publishes
(version, ref) to the `WeightStore`. Rollout workers and the reference model pull the latest version
before their next group, as numpy arrays read zero-copy from the node's shared memory.

A version travels as one contiguous byte buffer and its layout (name, dtype, shape, offset): Ray
writes one large buffer into the store several times faster than the same bytes as a few hundred
arrays, and the learner packs into a buffer it keeps, whose pages are already mapped.

A learner on CPU keeps its parameters in that buffer (`flatten_parameters`): they are views into
it, the optimizer updates them in place, and publishing is a single `ray.put` of the buffer with
nothing to pack. Other models (on a GPU, or not in float32) are packed into the buffer at publish.

Entries of the state dict that share one tensor (tied input and output embeddings) are sent once,
under the first name: a receiver of the same architecture shares them too, so loading that name
fills both, and neither the object store nor any receiver copies those bytes twice.
"""

from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

_ALIGN = 64  # bytes: every array starts aligned for any dtype and for vector loads
_staging: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its packing buffer
_flat: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (layout, buffer, tensors)


@ray.remote(num_cpus=0)
class WeightStore:
    """The latest version and where it is: object-store refs, or (collective transport) none, the
    version then being staged on the workers that received its broadcast and held by `source`, the
    learner's rank 0, for any that did not. It also keeps the transport's members: each joining or
    leaving worker starts a new epoch, and the sender forms a new group for it."""

    def __init__(self):
        self.version = -1
        self.refs: List[ray.ObjectRef] = []
        self.source = None
        self.epoch, self.members = 0, []

    def publish(self, version: int, refs: List[ray.ObjectRef], source=None) -> int:
        # The ref travels inside a list so that Ray hands over the reference, not the weights.
        if version <= self.version:
            raise ValueError(f"weight version {version} is not newer than {self.version}")
        self.version, self.refs, self.source = version, refs, source
        return version

    def latest(self) -> Tuple[int, List[ray.ObjectRef], Optional["ray.actor.ActorHandle"]]:
        return self.version, self.refs, self.source

    def join_transport(self, member) -> int:
        self.members.append(member)
        self.epoch += 1
        return self.epoch

    def leave_transport(self, members: List) -> int:
        gone = {m._actor_id for m in members}
        kept = [m for m in self.members if m._actor_id not in gone]
        if len(kept) != len(self.members):
            self.members, self.epoch = kept, self.epoch + 1
        return self.epoch

    def transport_members(self) -> Tuple[int, List]:
        return self.epoch, list(self.members)


def start_weight_store() -> "ray.actor.ActorHandle":
    """The store on the driver's node. It holds the only reference to the published weights, and the
    loss of the driver's node ends the run anyway: so losing any other node cannot take them with it."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return WeightStore.options(scheduling_strategy=here).remote()


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


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def _layout(entries) -> Tuple[List[Tuple[str, str, Tuple[int, ...], int]], int]:
    """(name, dtype, shape, offset) of each (name, numpy dtype, shape) laid out one after another,
    each aligned, and the bytes in all."""
    layout: List[Tuple[str, str, Tuple[int, ...], int]] = []
    size = 0
    for name, dt, shape in entries:
        dt = np.dtype(dt)
        layout.append((name, dt.str, tuple(shape), size))
        size += _aligned(dt.itemsize * int(np.prod(shape, dtype=np.int64)))
    return layout, size


def flatten_parameters(model, allocate=None) -> bool:
    """Moves a CPU float32 model's parameters and buffers into one contiguous buffer, in the layout
    `pack_state` sends, so that publishing needs no packing. Call it before creating an optimizer
    (which must see the parameters as they will stay). Returns False, changing nothing, for a model
    that cannot be sent as is (not on CPU, or floating point other than float32). `allocate(nbytes)`,
    if given, makes the buffer (a uint8 array), such as the collective transport's shared memory."""
    import torch

    entries = model.state_dict(keep_vars=True)
    groups: Dict[tuple, List] = {}  # one underlying tensor -> (first name, every tensor object on it)
    for name, t in entries.items():
        if t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32):
            return False
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
        groups.setdefault(key, [name, []])[1].append(t)
    layout, size = _layout((name, ts[0].detach().numpy().dtype, ts[0].shape) for name, ts in groups.values())
    buf = allocate(size) if allocate is not None else np.empty(size, dtype=np.uint8)
    owned = []
    with torch.no_grad():
        for (name, dtype, shape, offset), (_, tensors) in zip(layout, groups.values()):
            dt = np.dtype(dtype)
            view = buf[offset : offset + dt.itemsize * int(np.prod(shape, dtype=np.int64))].view(dt).reshape(shape)
            np.copyto(view, tensors[0].detach().numpy())
            flat = torch.from_numpy(view)
            for t in tensors:
                t.data = flat
            owned.append(tensors[0])
    _flat[model] = (layout, buf, owned)
    return True


def _flat_state(model) -> Optional[Dict]:
    """The model's flat buffer, if its parameters still live in it."""
    flat = _flat.get(model)
    if flat is None:
        return None
    layout, buf, owned = flat
    base = buf.ctypes.data
    if any(t.data_ptr() != base + offset for t, (_, _, _, offset) in zip(owned, layout)):
        return None  # something replaced a parameter's storage: pack instead
    return {"layout": layout, "data": buf}


def pack_state(model) -> Dict:
    """`state_to_numpy(model)` as one contiguous byte buffer, with its layout: the model's own
    buffer when `flatten_parameters` moved it there, else a copy into a buffer reused by the next
    call for the same model (`ray.put` copies it before returning)."""
    flat = _flat_state(model)
    if flat is not None:
        return flat
    arrays = state_to_numpy(model)
    layout, size = _layout((name, a.dtype, a.shape) for name, a in arrays.items())
    buf = _staging.get(model)
    if buf is None or buf.nbytes != size:
        buf = _staging[model] = np.empty(size, dtype=np.uint8)
    for (_, _, _, offset), a in zip(layout, arrays.values()):
        np.copyto(buf[offset : offset + a.nbytes].view(a.dtype).reshape(a.shape), a)
    return {"layout": layout, "data": buf}


def empty_packed(entries: Sequence[Tuple[str, object]], allocate=None) -> Dict:
    """A packed buffer for `entries` ((name, tensor): its shape and dtype; floating point as float32),
    left empty: a learner that cannot publish its own parameters (sharded, or LoRA's merged weights)
    fills it with each version. `allocate(nbytes)` makes the buffer, as for `flatten_parameters`."""
    import torch

    layout, size = _layout((name, np.float32 if t.is_floating_point() else torch.empty(0, dtype=t.dtype).numpy().dtype, t.shape)
                           for name, t in entries)
    return {"layout": layout, "data": allocate(size) if allocate is not None else np.zeros(size, dtype=np.uint8)}


def unpack_state(packed: Dict) -> Dict[str, np.ndarray]:
    """Name -> array views into the packed buffer (no copy)."""
    data = packed["data"]
    out: Dict[str, np.ndarray] = {}
    for name, dtype, shape, offset in packed["layout"]:
        dt = np.dtype(dtype)
        n = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        out[name] = data[offset : offset + n].view(dt).reshape(shape)
    return out


def publish_model(store, model, version: int) -> int:
    return publish_packed(store, pack_state(model), version)


def publish_packed(store, packed: Dict, version: int) -> int:
    return ray.get(store.publish.remote(version, [ray.put(packed)]))


def pull_if_newer(store, current: int, staged=None) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
    """The newest version if newer than `current`: from the object store, or (collective transport)
    `staged(version)`'s arrays when this worker received it, else from the learner through the object
    store (a worker that joined since its broadcast)."""
    version, refs, source = ray.get(store.latest.remote())
    if version <= current:
        return None
    if refs:
        return version, unpack_state(ray.get(refs[0]))
    weights = staged(version) if staged is not None else None
    if weights is not None:
        return version, weights
    if source is None:
        return None
    version, refs = ray.get(source.current_weights.remote())
    return version, unpack_state(ray.get(refs[0]))
