"""Starting a bubblewrap sandbox for one call, ahead of the call when `tools.sandbox.prestart` is on.

A started sandbox is bubblewrap with its namespaces made, its /tmp and /workspace mounted and its
processes in the call's memory cgroup, reading the program from a pipe: it copies it into
/workspace once the call writes it, finishes its set-up, then waits on `--block-fd` until the call
lets it run the program. Everything that does not depend on the program (starting bubblewrap,
making namespaces, joining the cgroup: about a third of a sandboxed `print(1)`) so happens before
the call, right after the previous one, off the call's path.

Each sandbox still serves one call: fresh namespaces, file systems, uid and cgroup per call, as
without prestarting. One waits per configuration in a process; it is stopped with its process
(`--die-with-parent`), and its cgroup is removed then as a stale one.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from orchestra_ray.tools.bwrap import WORKSPACE, bwrap_argv, sandbox_uid
from orchestra_ray.tools.cgroup import CallCgroup, process_tree, release
from orchestra_ray.tools.seccomp import namespace_filter
from orchestra_ray.tools.settings import SandboxConfig

PROGRAM = "main.py"


class SandboxUnavailable(RuntimeError):
    """The sandbox itself cannot start here (bubblewrap missing or unable to make namespaces)."""


def missing_bwrap(cfg: SandboxConfig) -> str:
    return (f"bubblewrap ({cfg.bwrap!r}) was not found: install it with `apt-get install bubblewrap` "
            "(or run `make setup` as root), or set tools.sandbox.mode=none (UNSAFE: no isolation)")


def minimal_env(home: str, tmp: str) -> Dict[str, str]:
    # Threads count against RLIMIT_NPROC and reserve address space: numerical libraries get one.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",  # output printed before a kill survives it
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def limited_command(cfg: SandboxConfig, python: str, program: str, uid: int) -> List[str]:
    """The program started by exec alone, no interpreter in between: prlimit sets the per-process
    limits and, as root, setpriv drops to the call's own uid."""
    limits = ["prlimit", f"--cpu={cfg.cpu_seconds}:{cfg.cpu_seconds + 1}", f"--as={cfg.memory_mb << 20}",
              f"--nproc={cfg.max_processes}", f"--fsize={cfg.max_file_mb << 20}", f"--nofile={cfg.max_open_files}",
              "--core=0", "--"]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid else []
    return limits + drop + [python, "-s", program]


def _memory_file(name: str, data: bytes) -> int:
    """A file descriptor of `data` in memory, at offset 0 (bubblewrap reads it to the end)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Started:
    """One call's sandbox: bubblewrap waiting for its program (`run` hands it over)."""

    def __init__(self, cfg: SandboxConfig, source: Optional[bytes] = None):
        """`source`: the program, for a sandbox made for a call already there: bubblewrap copies it
        while the call's cgroup is joined, rather than after."""
        bwrap = shutil.which(cfg.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(missing_bwrap(cfg))
        python = cfg.python or sys.executable
        as_root = os.geteuid() == 0
        env = minimal_env(WORKSPACE, "/tmp")
        program_r, self.program_w = os.pipe()
        info_r, info_w = os.pipe()  # bubblewrap writes its child's pid here once it exists
        block_r, self.block_w = os.pipe()  # ... and waits on this before it runs the command
        rules = namespace_filter()
        seccomp = _memory_file("seccomp", rules) if rules is not None else None
        # The private /tmp is memory: a few files of the largest size allowed.
        prefix = bwrap_argv(bwrap, python, 4 * cfg.max_file_mb << 20, cfg.workspace_mb << 20, program_r, PROGRAM,
                            seccomp, env, as_root)
        argv = prefix[:-1] + ["--info-fd", str(info_w), "--block-fd", str(block_r), "--"] + \
            limited_command(cfg, python, f"{WORKSPACE}/{PROGRAM}", sandbox_uid() if as_root else 0)
        passed = [program_r, info_w, block_r] + ([seccomp] if seccomp is not None else [])
        self.group = CallCgroup.create(cfg.call_memory_mb << 20) if cfg.call_memory_mb else None
        self.info_r, self.proc = info_r, None
        self.ran = False  # the program was handed over and let run
        self.handed = False  # the program is in bubblewrap's pipe
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, pass_fds=passed, start_new_session=True)
        except OSError as exc:
            self.close()
            raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from None
        finally:
            for fd in passed:
                os.close(fd)
        if source is not None:
            self.handed = self._hand_over(source)
        # Its processes join the call's cgroup once bubblewrap has made them, before any command runs.
        self.made = self._made(time.monotonic() + cfg.timeout_s)
        if self.made and self.group is not None:
            self.group.add(process_tree(self.proc.pid))

    def _made(self, deadline: float) -> bool:
        """Whether bubblewrap reports its sandbox's process made (False: it ended first, or the deadline passed)."""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.info_r], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
            if ready:
                return bool(os.read(self.info_r, 4096))
            if self.proc.poll() is not None:
                return False
        return False

    def usable(self) -> bool:
        return self.made and self.proc.poll() is None

    def _hand_over(self, source: bytes) -> bool:
        """Writes the program into bubblewrap's pipe; False if bubblewrap ended (failed, or was killed)."""
        try:
            view = memoryview(source)
            while view:  # a program larger than the pipe's buffer: bubblewrap reads as we write
                view = view[os.write(self.program_w, view):]
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.close(self.program_w)
            self.program_w = -1

    def run(self, source: Optional[bytes] = None) -> bool:
        """Hands over the program (unless given when made) and lets the sandbox run it; False if the
        sandbox ended first."""
        ok = self.made and (self.handed if source is None else self._hand_over(source))
        if ok:
            with contextlib.suppress(OSError):
                os.write(self.block_w, b"1")
        with contextlib.suppress(OSError):
            os.close(self.block_w)
        self.block_w = -1
        self.ran = ok
        return ok

    def close(self) -> None:
        """Closes what is left of the sandbox's pipes and releases its cgroup (the process is done)."""
        for fd in (self.program_w, self.block_w, self.info_r):  # info open until bubblewrap is gone
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.program_w = self.block_w = self.info_r = -1
        if self.group is not None:
            release(self.group)
            self.group = None

    def discard(self) -> None:
        """Stops a sandbox that will not be used."""
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()
        self.close()


# One long-lived thread makes every prestarted sandbox: bubblewrap's --die-with-parent follows the
# thread that started it, and would end the sandbox with a thread that ended after making it.
_lock = threading.Condition()
_waiting: Dict[str, Started] = {}  # configuration -> the sandbox made for its next call
_making: Dict[str, SandboxConfig] = {}  # asked for, not made yet
_maker: List[threading.Thread] = []


def take(cfg: SandboxConfig) -> Optional[Started]:
    """The sandbox prestarted for `cfg` if one is waiting and alive, else None."""
    with _lock:
        waiting = _waiting.pop(repr(cfg), None)
    if waiting is not None and not waiting.usable():
        waiting.discard()
        return None
    return waiting


def prestart(cfg: SandboxConfig) -> None:
    """Has the next call's sandbox made in the background, unless one is waiting or being made."""
    if not cfg.prestart:
        return
    key = repr(cfg)
    with _lock:
        if key in _waiting or key in _making:
            return
        _making[key] = cfg
        if not _maker:
            _maker.append(threading.Thread(target=_make_forever, name="sandbox-prestart", daemon=True))
            _maker[0].start()
        _lock.notify_all()


def _make_forever() -> None:
    while True:
        with _lock:
            while not _making:
                _lock.wait()
            key, cfg = next(iter(_making.items()))
        try:
            started = Started(cfg)
        except Exception:  # the next call starts its own and reports what fails
            started = None
        with _lock:
            del _making[key]
            if started is not None:
                _waiting[key] = started
            _lock.notify_all()


def wait_prestarted(cfg: SandboxConfig, timeout_s: float = 10.0) -> bool:
    """Waits until the next call's sandbox is made (benchmarks: a call measured as it finds it)."""
    key = repr(cfg)
    with _lock:
        _lock.wait_for(lambda: key not in _making, timeout_s)
        return key in _waiting

