"""A memory cgroup per sandboxed call: one limit for all of the call's processes together (and the
memory of its /workspace and /tmp), where RLIMIT_AS only bounds each process.

It is made under this process's own memory cgroup, where that is writable: cgroup v1's memory
controller, or under cgroup v2 a cgroup whose subtree has the memory controller (in practice the
root of a cgroup namespace: v2 allows no processes in a non-root cgroup whose children have
controllers). Where neither holds (an unprivileged process, most v2 containers), calls run with the
per-process limits alone, and `available()` says so.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from functools import lru_cache
from typing import List, Optional, Tuple

V1_ROOT = "/sys/fs/cgroup/memory"
V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
_names = itertools.count()


def _own_paths() -> Tuple[Optional[str], Optional[str]]:
    """(v1 memory path, v2 path) of this process, from /proc/self/cgroup."""
    v1 = v2 = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                v1 = path
            elif controllers == "":
                v2 = path
    return v1, v2


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@lru_cache(maxsize=1)
def _base() -> Tuple[Optional[str], int]:
    """(directory under which call cgroups are made, cgroup version), or (None, 0)."""
    v1, v2 = _own_paths()
    candidates = []
    if v1 is not None and os.path.isdir(V1_ROOT):
        candidates.append((os.path.join(V1_ROOT, v1.lstrip("/")), 1))
    if v2 is not None:
        for root in V2_ROOTS:
            here = os.path.join(root, v2.lstrip("/"))
            try:
                with open(os.path.join(here, "cgroup.subtree_control")) as f:
                    if "memory" in f.read().split():
                        candidates.append((here, 2))
            except OSError:
                continue
    for base, version in candidates:
        probe = os.path.join(base, f"orchestra-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
            remove_stale(base)
            return base, version
        except OSError:
            continue
    return None, 0


def available() -> bool:
    return _base()[0] is not None


class CallCgroup:
    def __init__(self, path: str, version: int):
        self.path, self.version = path, version

    @classmethod
    def create(cls, limit_bytes: int) -> Optional["CallCgroup"]:
        base, version = _base()
        if base is None:
            return None
        path = os.path.join(base, f"orchestra-sandbox-{os.getpid()}-{next(_names)}")
        try:
            os.mkdir(path)
            if version == 1:
                _write(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
                swap = os.path.join(path, "memory.memsw.limit_in_bytes")
                if os.path.exists(swap):
                    _write(swap, str(limit_bytes))  # memory + swap: no way around the limit through swap
            else:
                _write(os.path.join(path, "memory.max"), str(limit_bytes))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    _write(os.path.join(path, "memory.swap.max"), "0")
        except OSError:
            _rmdir(path)
            return None
        return cls(path, version)

    @property
    def procs(self) -> str:
        """The file a process writes its pid into to join."""
        return os.path.join(self.path, "cgroup.procs")

    def add(self, pids: List[int]) -> None:
        for pid in pids:
            try:
                _write(os.path.join(self.path, "cgroup.procs"), str(pid))
            except (ProcessLookupError, OSError):
                continue  # it ended meanwhile

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the call for the cgroup's limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError, ValueError), open(os.path.join(self.path, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def remove(self, timeout_s: float = 2.0) -> bool:
        """Kills whatever of the call is still in the cgroup (a daemon it left behind) and removes
        it once empty; False if it could not be emptied in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with open(self.procs) as f:
                    for pid in f.read().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)


def _rmdir(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


_pending: List["CallCgroup"] = []  # removed after their call answered, off its critical path


def release(group: "CallCgroup") -> None:
    """Kills what is left of the call and removes its cgroup once the kernel has let go of it (that
    can take a few milliseconds after the last process exited): now if it can, else at a later call."""
    _pending.append(group)
    for g in list(_pending):
        if g.remove(timeout_s=0.0):
            _pending.remove(g)


def remove_stale(base: str) -> int:
    """Removes the call cgroups of processes that died during a call; returns how many."""
    removed = 0
    for name in os.listdir(base):
        pid = name[len("orchestra-sandbox-"):].split("-", 1)[0] if name.startswith("orchestra-sandbox-") else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            removed += CallCgroup(os.path.join(base, name), 0).remove(timeout_s=0.5)
    return removed


def process_tree(pid: int) -> List[int]:
    """`pid` and its descendants, from /proc (children of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out
