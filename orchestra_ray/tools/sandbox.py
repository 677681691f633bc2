"""The code interpreter's sandbox: one Python program per call, under bubblewrap, with resource limits.

Each call gets a fresh workspace: under bubblewrap a memory file system of `workspace_mb` that
ends with the sandbox (nothing is written to the host's disk), with mode "none" a directory removed
afterwards, also after a timeout. The program is copied there and run by an interpreter that sees
only what orchestra_ray.tools.bwrap mounts. Limits are set by
a short prelude that runs inside the sandbox before the program: the process limit must be set for
the uid the program runs as, and preexec_fn is unsafe in a threaded process such as a Ray worker.

Everything the program does (errors, timeouts, limits, floods of output) comes back as a CodeResult;
only a sandbox that cannot start at all raises SandboxUnavailable.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from orchestra_ray.tools.bwrap import WORKSPACE, bwrap_argv, sandbox_uid
from orchestra_ray.tools.cgroup import CallCgroup, process_tree, release
from orchestra_ray.tools.code_result import CodeResult, failed
from orchestra_ray.tools.seccomp import namespace_filter
from orchestra_ray.tools.settings import SandboxConfig

PROGRAM = "main.py"
WORKSPACE_PREFIX = "orchestra-sandbox-"  # then the pid of the process that made it
OUTPUT_CAP_BYTES = 1 << 20  # per stream; a program past it is killed rather than buffered

# Inside the sandbox the program is started by exec alone, no interpreter in between: prlimit sets
# the per-process limits and, as root, setpriv drops to the call's own uid. bubblewrap closes the
# descriptors it was handed, so the program holds only stdin, stdout and stderr.
# Without bubblewrap (mode none) a shell joins the call's memory cgroup, then becomes the command.
_JOIN_AND_EXEC = 'echo $$ > "$0" && exec "$@"'


class SandboxUnavailable(RuntimeError):
    """The sandbox itself cannot start here (bubblewrap missing or unable to make namespaces)."""


def _missing_bwrap(cfg: SandboxConfig) -> str:
    return (f"bubblewrap ({cfg.bwrap!r}) was not found: install it with `apt-get install bubblewrap` "
            "(or run `make setup` as root), or set tools.sandbox.mode=none (UNSAFE: no isolation)")


def check_sandbox(cfg: SandboxConfig) -> Optional[str]:
    """None when code can run under cfg, else a message saying what is missing and how to fix it."""
    python = cfg.python or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return f"tools.sandbox.python: no executable Python interpreter at {python!r}"
    if cfg.mode == "bwrap" and shutil.which(cfg.bwrap) is None:
        return _missing_bwrap(cfg)
    try:
        res = run_code("print('ok')", cfg)
    except SandboxUnavailable as exc:
        return str(exc)
    if not res.ok or res.stdout.strip() != "ok":
        last = (res.stderr.strip().splitlines() or [res.error])[-1]
        return f"the sandboxed interpreter {python!r} cannot run a program: {last[:300]}"
    return None


# ------------------------------------------------------------------------------------- running
def _minimal_env(home: str, tmp: str) -> Dict[str, str]:
    # Threads count against RLIMIT_NPROC and reserve address space: numerical libraries get one.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",  # output printed before a kill survives it
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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
        bwrap = shutil.which(cfg.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(_missing_bwrap(cfg))
        as_root = os.geteuid() == 0
        uid = sandbox_uid() if as_root else 0
        fds = [_memory_file("main.py", source)]
        rules = namespace_filter()
        if rules is not None:
            fds.append(_memory_file("seccomp", rules))
        try:
            env = _minimal_env(WORKSPACE, "/tmp")
            # The private /tmp is memory: a few files of the largest size allowed.
            prefix = bwrap_argv(bwrap, python, 4 * cfg.max_file_mb << 20, cfg.workspace_mb << 20, fds[0], PROGRAM,
                                fds[1] if rules is not None else None, env, as_root)
            return _run(prefix, python, f"{WORKSPACE}/{PROGRAM}", uid, None, env, cfg, t0, tuple(fds))
        finally:
            for fd in fds:
                os.close(fd)
    workspace = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-")
    try:
        with open(os.path.join(workspace, PROGRAM), "wb") as f:
            f.write(source)
        return _run([], python, os.path.join(workspace, PROGRAM), 0, workspace, _minimal_env(workspace, workspace), cfg, t0)
    finally:
        remove_tree(workspace)


def _memory_file(name: str, data: bytes) -> int:
    """A file descriptor of `data` in memory, at offset 0 (bubblewrap reads it to the end)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # handed to bubblewrap alone (pass_fds)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


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


def _run(prefix: List[str], python: str, program: str, uid: int, cwd: Optional[str], env: Dict[str, str],
         cfg: SandboxConfig, t0: float, extra_fds: Tuple[int, ...] = ()) -> CodeResult:
    limits = ["prlimit", f"--cpu={cfg.cpu_seconds}:{cfg.cpu_seconds + 1}", f"--as={cfg.memory_mb << 20}",
              f"--nproc={cfg.max_processes}", f"--fsize={cfg.max_file_mb << 20}", f"--nofile={cfg.max_open_files}",
              "--core=0", "--"]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid else []
    command = limits + drop + [python, "-s", program]
    group = CallCgroup.create(cfg.call_memory_mb << 20) if cfg.call_memory_mb else None
    info_r, info_w = os.pipe()  # bubblewrap writes its child's pid here once the sandbox exists
    block_r, block_w = os.pipe()  # ... and waits on this before it runs the command
    ours = (info_r, info_w, block_r, block_w)
    if prefix:
        # The call joins its cgroup once the sandbox exists (its set-up is kernel work better done
        # outside a memory cgroup) and before the command runs.
        argv = prefix[:-1] + ["--info-fd", str(info_w), "--block-fd", str(block_r), "--"] + command
        passed = (info_w, block_r, *extra_fds)
    else:
        argv = (["/bin/sh", "-c", _JOIN_AND_EXEC, group.procs] if group is not None else []) + command
        passed = ()
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=cwd, env=env, pass_fds=passed, start_new_session=True)
        except OSError as exc:
            for fd in ours:
                os.close(fd)
            if prefix:
                raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from None
            return failed(f"the interpreter could not be started: {exc}", time.monotonic() - t0)
        os.close(info_w)
        os.close(block_r)
        try:
            started = not prefix or _sandbox_made(proc, info_r, t0 + cfg.timeout_s)
            if started and prefix and group is not None:
                group.add(process_tree(proc.pid))
            if started:  # else it never runs the command: it failed, or is killed by the time-out
                with contextlib.suppress(OSError):
                    os.write(block_w, b"1")
        finally:
            os.close(block_w)
        try:
            out, err, stop, truncated = _collect(proc, cfg, t0)
        finally:
            _kill_group(proc)
            proc.wait()
            os.close(info_r)  # open until bubblewrap is gone: a write to a closed pipe would kill it
        out_of_memory = group is not None and group.oom_killed()
    finally:
        if group is not None:
            release(group)
    return _result(proc, prefix, cfg, t0, out, err, stop, truncated, started, out_of_memory)


def _sandbox_made(proc: subprocess.Popen, info_r: int, deadline: float) -> bool:
    """Whether bubblewrap reports its sandbox made (False: it ended first, or the deadline passed)."""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([info_r], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
        if ready:
            return bool(os.read(info_r, 4096))
        if proc.poll() is not None:
            return False
    return False


def _result(proc, prefix, cfg, t0, out, err, stop, truncated, started, out_of_memory) -> CodeResult:
    wall = time.monotonic() - t0
    if not started and not stop:
        line = (_decode(err).strip().splitlines() or [f"exit status {proc.returncode}"])[0][:300]
        if prefix:
            raise SandboxUnavailable(f"bubblewrap cannot create the sandbox here: {line}")
        return failed(f"the interpreter could not start: {line}", wall)
    code = proc.returncode
    if prefix and code is not None and code > 128 and not stop:
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
