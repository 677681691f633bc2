"""Weight transport over a collective group (`weights.transport: collective`), beside the object store.

The learner's rank 0 broadcasts each version's packed buffer (actors/weight_transport.py) in buckets
over a torch.distributed group of its own (gloo) to every rollout worker that has joined, then
publishes the version number to the `WeightStore` with no object-store copy. Each worker receives on
a thread of its own (the actor's "transport" concurrency group), into one of two staging buffers, so
a broadcast never waits for a generation and never overwrites the weights a generation reads; the
worker loads the newest staged version before its next group, as it would pull one.

Workers on rank 0's own node take the bytes from shared memory instead (`weights.shared_memory`,
actors/node_segment.py): rank 0 writes each bucket once into a shared-memory segment and sends those
workers a one-number signal per bucket, and each copies the bucket out as soon as it is signalled,
while rank 0 writes the next. Gloo moves bytes over TCP even on loopback, so sending them to each
local worker costs two kernel copies per byte and worker; this way it is one copy per worker, as
NCCL's shared-memory transport does within a node. Workers on other nodes get the bytes over the group.

The group is formed again whenever its members change: a worker joins (a new or replacing one) by
registering with the WeightStore, which starts a new epoch; the sender forms the epoch's group at its
next version. A worker that has not received the current version (it joined since) asks rank 0 for it
(`current_weights`, through the object store). A broadcast that fails or times out (a member died,
a network fault) is logged in one line and that version goes through the object store; members that
no longer answer leave, and the next version forms a new group: nothing waits past
`weights.timeout_s`.

The group is a standalone gloo `ProcessGroup` on its own TCP rendezvous, not torch.distributed's
default group, which a learner group's ranks use for FSDP.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

import numpy as np
import ray

from actors.node_segment import NodeSegment
from actors.weight_transport import unpack_state

logger = logging.getLogger(__name__)
TRANSPORT = "transport"  # the concurrency group of the methods below
CONCURRENCY_GROUPS = {TRANSPORT: 1}


def _group(host: str, port: int, rank: int, world: int, timeout_s: float, store=None):
    """This process as `rank` of a gloo group of its own (rank 0 passes the TCP store it listens on)."""
    import torch.distributed as dist

    timeout = timedelta(seconds=max(1.0, timeout_s))
    if store is None:
        store = dist.TCPStore(host, port, world, False, timeout=timeout)
    return dist.ProcessGroupGloo(store, rank, world, timeout), store


def _send(group, data: np.ndarray, bucket_bytes: int, deadline: float, remote: List[int], local: List[int],
          segment: Optional[NodeSegment]) -> None:
    """`data` (uint8) from rank 0, in buckets, all in flight at once: the bytes themselves to each
    `remote` rank; a one-number signal per bucket to the `local` ranks (on this node), which copy
    each bucket out of `segment` as soon as it is signalled (rank 0 writes it there first, unless
    `data` is the segment's own array). Fails once `deadline`
    (time.monotonic()) has passed."""
    import torch

    flat = torch.from_numpy(data)
    copy = bool(local) and segment.array.ctypes.data != data.ctypes.data  # else `data` lives in the segment
    works = []
    for i, off in enumerate(range(0, data.nbytes, bucket_bytes)):
        end = min(off + bucket_bytes, data.nbytes)
        if copy:
            np.copyto(segment.array[off:end], data[off:end])
        if local:
            signal = torch.tensor([i], dtype=torch.int64)
            works += [group.send([signal], r, i) for r in local]
        works += [group.send([flat[off:end]], r, i) for r in remote]
    for w in works:
        w.wait(timedelta(seconds=max(0.001, deadline - time.monotonic())))


def _receive(group, buffer: np.ndarray, bucket_bytes: int, segment: Optional[NodeSegment]) -> None:
    """Rank 0's buckets into `buffer`: received over the group, or (`segment`) copied from shared
    memory once each bucket's signal arrives. The group's own time-out bounds a sender that stops."""
    import torch

    flat = torch.from_numpy(buffer)
    buckets = list(enumerate(range(0, buffer.nbytes, bucket_bytes)))
    if segment is None:
        works = [group.recv([flat[off : off + bucket_bytes]], 0, i) for i, off in buckets]
        for w in works:
            w.wait()
        return
    signals = [torch.empty(1, dtype=torch.int64) for _ in buckets]
    works = [group.recv([signals[i]], 0, i) for i, _ in buckets]
    for i, off in buckets:
        works[i].wait()
        end = min(off + bucket_bytes, buffer.nbytes)
        np.copyto(buffer[off:end], segment.array[off:end])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


class CollectiveSender:
    """Rank 0's end: forms each epoch's group and broadcasts versions to its members."""

    def __init__(self, store, bucket_mb: float, timeout_s: float, shared_memory: bool = True):
        self.store, self.bucket_bytes, self.timeout_s = store, max(1, int(bucket_mb * 2**20)), timeout_s
        self.epoch, self.members, self.group = -1, [], None
        self._rendezvous = None
        self.shared_memory = shared_memory and NodeSegment.available()
        self.local: List[int] = []  # ranks of members on this node (shared memory), the rest get the bytes
        self.segment: Optional[NodeSegment] = None  # a copy of the version being sent, for local members
        self.home: Optional[NodeSegment] = None  # the buffer the sender publishes from, if it lives in shared memory

    def send(self, packed: Dict, version: int) -> bool:
        """True when every member of the current epoch has `version` staged; False (logged) when
        there are no members or the broadcast failed, and the caller publishes through the object
        store. Forming the group and broadcasting share one deadline, `weights.timeout_s` from now."""
        deadline = time.monotonic() + self.timeout_s
        epoch, members = ray.get(self.store.transport_members.remote())
        if not members:
            return False
        failure = None
        try:
            if epoch != self.epoch:
                self._form(epoch, members, deadline)
            layout, data = packed["layout"], packed["data"]
            source = self._source(data)
            local = self.local if source is not None else self._local_ranks(int(data.nbytes))
            source = source or self.segment
            name = source.name if local else None
            done = [m.receive_weights.remote(version, layout, int(data.nbytes), self.bucket_bytes,
                                             name if rank in local else None)
                    for rank, m in enumerate(self.members, start=1)]
            remote = [rank for rank in range(1, len(self.members) + 1) if rank not in local]
            _send(self.group, data, self.bucket_bytes, deadline, remote, local, source)
            ray.get(done, timeout=max(0.001, deadline - time.monotonic()))
            return True
        except Exception as exc:  # a member died or stalled: this version goes by the object store
            failure = _first_line(exc)
        # out of the handler: nothing (a traceback's frames) holds the group any more once closed
        logger.warning("weight broadcast of version %d to %d worker(s) failed (%s); version %d goes through "
                       "the object store, the group is formed again at the next version",
                       version, len(members), failure, version)
        self.close()
        self._drop_unresponsive(members)
        return False

    def _form(self, epoch: int, members: List, deadline: float) -> None:
        import torch.distributed as dist

        self.close()
        host = ray.util.get_node_ip_address()
        world = len(members) + 1
        left = max(1.0, deadline - time.monotonic())
        # port 0: the store binds a free port itself, no other process can take it in between
        store = dist.TCPStore(host, 0, world, True, timeout=timedelta(seconds=left), wait_for_workers=False)
        # Members on this node try to open a segment of ours as they join: one that cannot (another pid
        # namespace, a stricter /proc) gets the bytes over the group instead of stalling a broadcast.
        probe = (self.home or NodeSegment.create(1, label="orchestra-ray-probe")) if self.shared_memory else None
        joined = [m.join_transport.remote(epoch, host, store.port, i + 1, world, left, probe.name if probe else None)
                  for i, m in enumerate(members)]
        self.group, self._rendezvous = _group(host, store.port, 0, world, left, store)
        try:
            nodes = ray.get(joined, timeout=max(0.001, deadline - time.monotonic()))
        finally:
            if probe is not None and probe is not self.home:
                probe.close()
        here = ray.get_runtime_context().get_node_id()
        self.local = [rank for rank, (node, readable) in enumerate(nodes, start=1) if node == here and readable]
        unreadable = sum(1 for node, readable in nodes if node == here and not readable and probe is not None)
        if unreadable:
            logger.warning("%d worker(s) on this node cannot read this process's shared memory: they get the bytes "
                           "over the group", unreadable)
        self.epoch, self.members = epoch, list(members)

    def allocate(self, nbytes: int) -> np.ndarray:
        """A buffer for the weights rank 0 publishes from (its flat parameters, or the buffer a
        sharded or LoRA learner gathers into): in shared memory when this transport uses it, so that
        this node's members copy each version straight from it and rank 0 writes nothing more. The
        weights change only between sends (a step never overlaps `send`). A segment that cannot be
        made gives an ordinary array."""
        if self.shared_memory:
            try:
                self.home = NodeSegment.create(nbytes, label="orchestra-ray-learner")
                return self.home.array
            except OSError as exc:
                logger.warning("the publish buffer (%d bytes) stays out of shared memory (%s)", nbytes, _first_line(exc))
        return np.zeros(nbytes, dtype=np.uint8)

    def _source(self, data: np.ndarray) -> Optional[NodeSegment]:
        """The segment local members read `data` from: the sender's own buffer when `data` is it."""
        home = self.home
        if home is not None and home.array is not None and data.ctypes.data == home.array.ctypes.data \
                and data.nbytes == home.nbytes:
            return home
        return None

    def _local_ranks(self, nbytes: int) -> List[int]:
        """The members that read this version from shared memory: those on this node, once a
        segment of `nbytes` exists (one that cannot be made, for want of memory, is logged once and
        every member gets the bytes over the group from then on)."""
        if not self.local:
            return []
        if self.segment is None or self.segment.nbytes != nbytes:
            if self.segment is not None:
                self.segment.close()
                self.segment = None
            try:
                self.segment = NodeSegment.create(nbytes)
            except OSError as exc:
                logger.warning("no shared-memory segment of %d bytes (%s): weights reach this node's workers over "
                               "the group", nbytes, _first_line(exc))
                self.shared_memory, self.local = False, []
                return []
        return self.local

    def _drop_unresponsive(self, members: List) -> None:
        """Members whose actor has died leave the transport (one that is alive but still busy with
        the failed broadcast stays: its receive ends at the group's time-out, and it joins the next group)."""
        pings = {m.transport_ping.remote(): m for m in members}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=min(5.0, self.timeout_s))
        gone = []
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:  # dead, or (any other error) alive
                if isinstance(exc, ray.exceptions.RayActorError):
                    gone.append(pings[ref])
        ray.get(self.store.leave_transport.remote(gone))
        self.epoch = -1  # form anew even if nobody left (a failed broadcast leaves the group unusable)

    def close(self) -> None:
        """Drops the group: its connections close, so members still receiving from it fail at once."""
        group, self.group, self._rendezvous, self.members, self.local = self.group, None, None, [], []
        if self.segment is not None:  # a member still copying from it keeps its mapping; the next version gets a new one
            self.segment.close()
            self.segment = None
        if group is not None:
            del group
            gc.collect()


class CollectiveReceiver:
    """A rollout worker's end: joins each epoch's group; receives into a staging buffer that is
    neither the one the engine reads (its arrays are the engine's weights on CPU) nor the newest
    complete version not yet loaded: three buffers, so a broadcast never destroys either."""

    SLOTS = 3

    def __init__(self):
        self.group = None
        self._rendezvous = None
        self.epoch = -1
        self.buffers: List[Optional[np.ndarray]] = [None] * self.SLOTS
        self.staged: List[Tuple[int, Optional[list]]] = [(-1, None)] * self.SLOTS  # (version, layout); -1: none
        self.in_use = -1  # the buffer whose arrays the engine holds (share_weights), never written
        self.lock = threading.Lock()
        self.segment: Optional[NodeSegment] = None  # the sender's, when on this node
        self.last_segment: Optional[str] = None

    def _segment(self, name: Optional[str]) -> Optional[NodeSegment]:
        """The sender's segment `name` mapped (None: the bytes come over the group); a segment of an
        earlier version is unmapped, so it is not kept alive here."""
        if self.segment is not None and self.segment.name != name:
            old, self.segment = self.segment, None
            old.close()
        if name is not None and self.segment is None:
            self.segment = NodeSegment.open(name)
        return self.segment

    def join(self, epoch: int, host: str, port: int, rank: int, world: int, timeout_s: float,
             probe: Optional[str] = None) -> Tuple[str, bool]:
        """Joins the epoch's group as `rank`; returns this node's id and whether this process can
        read the sender's segment `probe` (members on the sender's node that can read from its
        shared memory)."""
        self.group = self._rendezvous = None
        self.group, self._rendezvous = _group(host, port, rank, world, timeout_s)
        self.epoch = epoch
        readable = False
        if probe is not None:
            try:
                NodeSegment.open(probe).close()
                readable = True
            except (OSError, ValueError):
                readable = False
        return ray.get_runtime_context().get_node_id(), readable

    def receive(self, version: int, layout: list, nbytes: int, bucket_bytes: int, segment: Optional[str] = None) -> int:
        with self.lock:
            newest = max(range(self.SLOTS), key=lambda i: self.staged[i][0])
            free = [i for i in range(self.SLOTS) if i != self.in_use and i != newest]
            slot = min(free, key=lambda i: self.staged[i][0])
            if self.buffers[slot] is None or self.buffers[slot].nbytes != nbytes:
                self.buffers[slot] = np.empty(nbytes, dtype=np.uint8)
            self.staged[slot] = (-1, None)  # being written
        try:
            _receive(self.group, self.buffers[slot], bucket_bytes, self._segment(segment))
            self.last_segment = segment
        except Exception:
            logger.warning("receiving version %d failed", version)
            raise
        with self.lock:
            self.staged[slot] = (version, layout)
        return version

    def take(self, version: int) -> Optional[Dict[str, np.ndarray]]:
        """The staged `version` as name -> array (views into its buffer, which is then kept from
        being written until another version is taken), or None if it is not staged."""
        with self.lock:
            for i, (v, layout) in enumerate(self.staged):
                if v == version:
                    self.in_use = i
                    return unpack_state({"layout": layout, "data": self.buffers[i]})
        return None


class ReceivesWeights:
    """Methods of an actor that receives weights by broadcast (a mixin of actor classes that create
    `self.receiver = CollectiveReceiver()`; declared with `concurrency_groups=CONCURRENCY_GROUPS`)."""

    @ray.method(concurrency_group=TRANSPORT)
    def join_transport(self, epoch: int, host: str, port: int, rank: int, world: int, timeout_s: float,
                       probe: Optional[str] = None) -> Tuple[str, bool]:
        return self.receiver.join(epoch, host, port, rank, world, timeout_s, probe)

    @ray.method(concurrency_group=TRANSPORT)
    def receive_weights(self, version: int, layout: list, nbytes: int, bucket_bytes: int,
                        segment: Optional[str] = None) -> int:
        return self.receiver.receive(version, layout, nbytes, bucket_bytes, segment)

    @ray.method(concurrency_group=TRANSPORT)
    def weights_path(self) -> str:
        """How the last version arrived: "shared_memory" (from the sender's node) or "group"."""
        return "shared_memory" if self.receiver.last_segment else "group"

    @ray.method(concurrency_group=TRANSPORT)
    def transport_ping(self) -> bool:
        return True

