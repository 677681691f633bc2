"""The code interpreter's sandbox: one Python program per call, under bubblewrap, with resource limits.

Each call gets a fresh workspace: under bubblewrap a memory file system of `workspace_mb` that
ends with the sandbox (nothing is written to the host's disk), with mode "none" a directory removed
afterwards, also after a timeout. The program is copied there and run by an interpreter that sees
only what orchestra_ray.tools.bwrap mounts, under prlimit's limits (preexec_fn is unsafe in a
threaded process such as a Ray worker). The sandbox itself is made before the call when it can
be (orchestra_ray/tools/sandbox_start.py).

Everything the program does (errors, timeouts, limits, floods of output) comes back as a CodeResult;
only a sandbox that cannot start at all raises SandboxUnavailable.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Tuple

from orchestra_ray.tools import sandbox_start
from orchestra_ray.tools.cgroup import CallCgroup, release
from orchestra_ray.tools.code_result import CodeResult, failed
from orchestra_ray.tools.sandbox_start import PROGRAM, SandboxUnavailable, limited_command, minimal_env, missing_bwrap
from orchestra_ray.tools.settings import SandboxConfig

WORKSPACE_PREFIX = "orchestra-sandbox-"  # then the pid of the process that made it
OUTPUT_CAP_BYTES = 1 << 20  # per stream; a program past it is killed rather than buffered

# Without bubblewrap (mode none) a shell joins the call's memory cgroup, then becomes the command.
_JOIN_AND_EXEC = 'echo $$ > "$0" && exec "$@"'


def check_sandbox(cfg: SandboxConfig) -> Optional[str]:
    """None when code can run under cfg, else a message saying what is missing and how to fix it."""
    python = cfg.python or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return f"tools.sandbox.python: no executable Python interpreter at {python!r}"
    if cfg.mode == "bwrap" and shutil.which(cfg.bwrap) is None:
        return missing_bwrap(cfg)
    try:
        res = run_code("print('ok')", cfg)
    except SandboxUnavailable as exc:
        return str(exc)
    if not res.ok or res.stdout.strip() != "ok":
        last = (res.stderr.strip().splitlines() or [res.error])[-1]
        return f"the sandboxed interpreter {python!r} cannot run a program: {last[:300]}"
    return None


# ------------------------------------------------------------------------------------- running
def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _exit_error(code: int, cfg: SandboxConfig) -> str:
    if code >= 0:
        return f"exit code {code}"
    name = _signal_name(-code)
    if name == "SIGKILL":
        return "killed by signal SIGKILL (memory or CPU limit)"
    if name == "SIGXCPU":
        return f"killed by signal SIGXCPU (CPU limit of {cfg.cpu_seconds}s)"
    return f"killed by signal {name}"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def run_code(code: str, cfg: SandboxConfig) -> CodeResult:
    """Run `code` as a Python program in a fresh sandbox; never raises for anything the code does."""
    t0 = time.monotonic()
    if not isinstance(code, str):
        return failed("code must be a string")
    if len(code) > cfg.max_code_chars:
        return failed(f"code has {len(code)} characters, limit is {cfg.max_code_chars} (tools.sandbox.max_code_chars)")
    if "\x00" in code:  # the interpreter refuses such source anyway; no sandbox needed to say so
        return failed(f"code contains a NUL character at position {code.index(chr(0))}")
    python = cfg.python or sys.executable
    source = code.encode("utf-8", errors="replace")
    if cfg.mode == "bwrap":
        started = sandbox_start.take(cfg)  # made after the previous call, or None
        try:
            if started is None or not started.run(source):  # none waited, or it ended meanwhile: one now
                if started is not None:
                    started.discard()
                started = sandbox_start.Started(cfg, source)
                started.run()
            return _run_started(started, cfg, t0)
        finally:
            sandbox_start.prestart(cfg)  # the next call's, in the background
    workspace = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-")
    try:
        with open(os.path.join(workspace, PROGRAM), "wb") as f:
            f.write(source)
        return _run_unsandboxed(limited_command(cfg, python, os.path.join(workspace, PROGRAM), 0), workspace, cfg, t0)
    finally:
        remove_tree(workspace)


def remove_tree(path: str) -> None:
    """Removes a workspace whatever the program made of it: trees too deep for shutil's recursion
    and directories it closed to us go through `rm -rf` after a `chmod -R u+rwx`."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except (RecursionError, OSError):
        subprocess.run(["chmod", "-R", "u+rwx", path], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_workspaces(root: Optional[str] = None) -> int:
    """Removes the workspaces of processes that died during a call (their own clean-up never ran);
    returns how many."""
    root = root or tempfile.gettempdir()
    removed = 0
    for name in os.listdir(root):
        pid = name[len(WORKSPACE_PREFIX):].split("-", 1)[0] if name.startswith(WORKSPACE_PREFIX) else ""
        if not pid.isdigit():
            continue
        if _alive(int(pid)):
            continue  # its maker removes it itself
        remove_tree(os.path.join(root, name))
        removed += 1
    return removed


def _run_started(started: sandbox_start.Started, cfg: SandboxConfig, t0: float) -> CodeResult:
    """The program handed over (`started.run`) runs to its end; its result."""
    proc = started.proc
    try:
        out, err, stop, truncated = _collect(proc, cfg, t0)
    finally:
        _kill_group(proc)
        proc.wait()
        out_of_memory = started.group is not None and started.group.oom_killed()
        started.close()
    return _result(proc, True, cfg, t0, out, err, stop, truncated, started.ran, out_of_memory)


def _run_unsandboxed(command: List[str], workspace: str, cfg: SandboxConfig, t0: float) -> CodeResult:
    group = CallCgroup.create(cfg.call_memory_mb << 20) if cfg.call_memory_mb else None
    argv = (["/bin/sh", "-c", _JOIN_AND_EXEC, group.procs] if group is not None else []) + command
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=workspace, env=minimal_env(workspace, workspace), start_new_session=True)
        except OSError as exc:
            return failed(f"the interpreter could not be started: {exc}", time.monotonic() - t0)
        try:
            out, err, stop, truncated = _collect(proc, cfg, t0)
        finally:
            _kill_group(proc)
            proc.wait()
        out_of_memory = group is not None and group.oom_killed()
    finally:
        if group is not None:
            release(group)
    return _result(proc, False, cfg, t0, out, err, stop, truncated, True, out_of_memory)


def _result(proc, sandboxed, cfg, t0, out, err, stop, truncated, started, out_of_memory) -> CodeResult:
    wall = time.monotonic() - t0
    if not started and not stop:
        line = (_decode(err).strip().splitlines() or [f"exit status {proc.returncode}"])[0][:300]
        if sandboxed:
            raise SandboxUnavailable(f"bubblewrap cannot create the sandbox here: {line}")
        return failed(f"the interpreter could not start: {line}", wall)
    code = proc.returncode
    if sandboxed and code is not None and code > 128 and not stop:
        code = -(code - 128)  # bubblewrap reports a program killed by signal N as exit status 128 + N
    limit = cfg.max_output_chars
    stdout, stderr = _decode(out), _decode(err)
    cut = truncated or len(stdout) > limit or len(stderr) > limit
    stdout, stderr = stdout[:limit], stderr[-limit:] if len(stderr) > limit else stderr
    if stop:
        return CodeResult(False, stdout, stderr, None, stop, wall, cut)
    ok = code == 0
    error = "" if ok else _exit_error(code, cfg)
    if out_of_memory:
        error = f"killed: the call's processes together passed its memory limit of {cfg.call_memory_mb} MB " \
                f"(tools.sandbox.call_memory_mb)" if not ok else error
    return CodeResult(ok, stdout, stderr, code, error, wall, cut)


def _collect(proc: subprocess.Popen, cfg: SandboxConfig, t0: float) -> Tuple[bytes, bytes, str, bool]:
    """Read both pipes until the program has exited and they are closed, the wall-clock limit
    passes, or a stream passes the cap. Returns (stdout, stderr, why the program was stopped or "",
    whether output was lost)."""
    cap = max(OUTPUT_CAP_BYTES, 4 * cfg.max_output_chars)
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = t0 + cfg.timeout_s
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    # A pidfd wakes the loop the moment the program exits, rather than at the next poll.
    pidfd = None
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    stop, exited = "", False
    try:
        while not (exited and not any(fd in bufs for fd in sel.get_map())):
            now = time.monotonic()
            if now >= deadline:
                if not exited:
                    stop = f"timed out after {float(cfg.timeout_s)}s"
                break
            if not sel.get_map():  # outputs closed, the program still running (no pidfd here)
                time.sleep(min(0.002, deadline - now))
            for key, _ in sel.select(min(0.05, deadline - now)) if sel.get_map() else ():
                if key.fd == pidfd:
                    sel.unregister(pidfd)
                    continue
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk[: cap - len(buf) + 1]
                if len(buf) > cap:
                    del buf[cap:]
                    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), f"output exceeded {cap} bytes", True
            if not exited and _has_exited(proc):
                # Whatever the program left behind in its process group goes with it; its pipes
                # then close at once, or (a daemon that escaped the group) after a short grace.
                exited = True
                _kill_group(proc)
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), stop, False


def _has_exited(proc: subprocess.Popen) -> bool:
    # WNOWAIT leaves the process a zombie, so its process group id cannot be reused before we kill it.
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
