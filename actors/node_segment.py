"""Shared memory between the processes of one node, the collective transport's path to the rollout
workers on the sender's own node: they copy each version out of it, instead of gloo sending the
same bytes through loopback TCP once per worker.

A segment is an anonymous memory file (`memfd_create`) that only its maker's open descriptor names:
readers on the node open it through `/proc/<maker's pid>/fd/<fd>`, checked by inode. Nothing is left
behind when processes die (a file in /dev/shm outlives a SIGKILLed actor); the memory is freed once
the maker and every reader have closed it. Its space is reserved when it is made
(`posix_fallocate`), so memory too short for it fails there with one OSError, never with a SIGBUS at
the first write into a page that cannot be had.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Optional

import numpy as np


class SegmentUnreadable(OSError):
    """A reader could not map the maker's segment (another pid namespace, a stricter /proc)."""


class NodeSegment:
    """`nbytes` of shared memory as a uint8 array; `create` makes one (writable), `open(name)` maps
    the maker's segment read-only in another process of the same node."""

    def __init__(self, name: str, fd: Optional[int], mapping: mmap.mmap, writable: bool):
        self.name, self._fd, self._mmap = name, fd, mapping
        self.array: Optional[np.ndarray] = np.frombuffer(mapping, dtype=np.uint8)
        if not writable:
            self.array.flags.writeable = False

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")

    @classmethod
    def create(cls, nbytes: int, label: str = "orchestra-ray-weights") -> "NodeSegment":
        fd = os.memfd_create(label, os.MFD_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, max(1, nbytes))
            mapping = mmap.mmap(fd, max(1, nbytes))
        except BaseException:
            os.close(fd)
            raise
        return cls(f"{os.getpid()}:{fd}:{os.fstat(fd).st_ino}", fd, mapping, writable=True)

    @classmethod
    def open(cls, name: str) -> "NodeSegment":
        try:
            pid, fd, inode = (int(part) for part in name.split(":"))
        except ValueError:
            raise ValueError(f"not a segment name: {name!r}") from None
        try:
            handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY)
        except OSError as exc:
            raise SegmentUnreadable(f"cannot open shared-memory segment {name} of process {pid}: {exc}") from None
        try:
            if os.fstat(handle).st_ino != inode:  # the maker closed it and the descriptor was reused
                raise SegmentUnreadable(f"shared-memory segment {name} is gone")
            return cls(name, None, mmap.mmap(handle, 0, prot=mmap.PROT_READ), writable=False)
        finally:
            os.close(handle)

    @property
    def nbytes(self) -> int:
        return 0 if self.array is None else self.array.nbytes

    def close(self) -> None:
        """Unmaps the segment (and closes the maker's descriptor); arrays taken from `array` must be gone."""
        self.array = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(BufferError):  # a view is still alive somewhere: the mapping goes when it does
            self._mmap.close()
