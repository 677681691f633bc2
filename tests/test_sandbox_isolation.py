"""The sandbox holds against a program that tries to widen it: no namespaces or mounts of its own
(so no tmpfs beyond the limits), a workspace and /tmp of fixed size in memory, nothing on the host's
disk; an interpreter in a virtual environment under the host's /tmp runs; a tree too deep for
Python's recursion is still cleaned up. Real bubblewrap, no Ray."""

import glob
import os
import subprocess
import sys
import tempfile
import time

import pytest

from orchestra_ray.tools.sandbox import WORKSPACE_PREFIX, remove_stale_workspaces, run_code
from orchestra_ray.tools.seccomp import NAMESPACE_FLAGS, namespace_filter
from orchestra_ray.tools.settings import SandboxConfig

CFG = SandboxConfig(timeout_s=20.0)
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def run(code, **overrides):
    import dataclasses

    return run_code(code, dataclasses.replace(CFG, **overrides))


@pytest.mark.parametrize("attempt", [
    LIBC + "print(libc.unshare(0x10000000), ctypes.get_errno())",  # CLONE_NEWUSER
    LIBC + "print(libc.unshare(0x00020000), ctypes.get_errno())",  # CLONE_NEWNS
    LIBC + "print(libc.unshare(0x40000000), ctypes.get_errno())",  # CLONE_NEWNET
    LIBC + "print(libc.syscall(56 if os.uname().machine == 'x86_64' else 220, 0x10000000 | 17, 0, 0, 0, 0), ctypes.get_errno())",
    LIBC + "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, b'size=1g'), ctypes.get_errno())",
    LIBC + "fd = os.open('/proc/self/ns/user', os.O_RDONLY)\nprint(libc.setns(fd, 0), ctypes.get_errno())",
    LIBC + "print(libc.chroot(b'/tmp'), ctypes.get_errno())",
])
def test_no_namespace_or_mount_from_inside(attempt):
    res = run(attempt)
    assert res.ok, res.observation(2000)
    ret, err = res.stdout.split()
    assert ret == "-1" and int(err) == 1, f"refused with EPERM: {res.stdout}"


def test_the_unshare_tool_cannot_make_a_user_namespace_and_mount_a_tmpfs():
    res = run("import subprocess\n"
              "r = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'mount -t tmpfs -o size=1g none /tmp && echo mounted'],"
              " capture_output=True, text=True)\nprint(r.returncode, r.stdout.strip(), r.stderr.strip())")
    assert res.ok and "mounted" not in res.stdout and "Operation not permitted" in res.stdout, res.stdout


def test_threads_and_processes_still_work_under_the_filter():
    res = run("import os, threading\nt = threading.Thread(target=print, args=('thread',))\nt.start(); t.join()\n"
              "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nprint(os.waitpid(pid, 0)[1] >> 8)")
    assert res.ok and res.stdout.split() == ["thread", "7"], res.observation(2000)


# Four processes at once each write files of 3 MB into `where` until it is full.
FILL = """import os
where = {where!r}
pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        code = 0
        for j in range(4):
            try:
                with open(os.path.join(where, f'f{{i}}-{{j}}'), 'wb') as f:
                    f.write(b'x' * (3 << 20))
            except OSError as e:
                code = e.errno
        os._exit(code)
    pids.append(pid)
codes = sorted({{os.waitpid(p, 0)[1] >> 8 for p in pids}})
used = sum(os.path.getsize(os.path.join(where, n)) for n in os.listdir(where))
print(codes, used >> 20)
"""


@pytest.mark.parametrize("where, limit_mb, overrides", [
    ("/workspace", 8, dict(workspace_mb=8, max_file_mb=4)),
    ("/tmp", 12, dict(max_file_mb=3)),  # /tmp is 4 x max_file_mb
])
def test_workspace_and_tmp_are_bounded_with_many_processes_at_once(where, limit_mb, overrides):
    res = run(FILL.format(where=where), **overrides)
    assert res.ok, res.observation(2000)
    codes, used = res.stdout.rsplit(" ", 1)
    assert "28" in codes, f"ENOSPC once full: {res.stdout}"
    assert int(used) <= limit_mb


def test_an_interpreter_in_a_virtual_environment_under_tmp_runs(tmp_path_factory):
    venv = tempfile.mkdtemp(prefix="orchestra-venv-", dir="/tmp")
    try:
        os.chmod(venv, 0o755)  # as a clone under /tmp is
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
        res = run("import sys; print(sys.prefix)", python=os.path.join(venv, "bin", "python"))
        assert res.ok and res.stdout.strip() == venv, res.observation(2000)
    finally:
        subprocess.run(["rm", "-rf", venv])


def test_a_tree_too_deep_for_recursion_is_removed():
    # mode none keeps a host workspace; a stale one (its process died) goes the same way
    deep = "import os\nfor _ in range(3000):\n    os.mkdir('d'); os.chdir('d')\nopen('leaf', 'w').write('x')\nprint('deep')"
    res = run(deep, mode="none")
    assert res.ok and res.stdout == "deep\n", res.observation(2000)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKSPACE_PREFIX}{os.getpid()}-*"))
    stale = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}999999999-")
    subprocess.run([sys.executable, "-c", f"import os\nos.chdir({stale!r})\n" + deep.split("\n", 1)[1]], check=True)
    assert remove_stale_workspaces() >= 1 and not os.path.exists(stale)


def test_the_filter_is_a_program_bubblewrap_reads():
    for machine in ("x86_64", "aarch64"):
        prog = namespace_filter(machine)
        assert prog and len(prog) % 8 == 0 and NAMESPACE_FLAGS & 0x10000000
    assert namespace_filter("sparc") is None


@pytest.mark.skipif(not __import__("orchestra_ray.tools.cgroup", fromlist=["available"]).available(),
                    reason="this process has no writable memory cgroup: calls are bounded per process only")
def test_the_memory_limit_holds_for_all_of_a_calls_processes_together():
    # Four processes of 600 MB each fit the per-process limit (1 GB) but not the call's (1 GB in all).
    code = ("import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = bytearray(600 << 20)\n        for j in range(0, len(b), 4096): b[j] = 1\n"
            "        time.sleep(1.5); os._exit(0)\n    pids.append(pid)\n"
            "print(sum(os.waitpid(p, 0)[1] == 9 for p in pids))")
    res = run(code, memory_mb=1024, call_memory_mb=1024)
    assert res.ok and int(res.stdout) >= 3, res.observation(2000)  # at most one of them fits
    alone = run(code.replace("range(4)", "range(1)"), memory_mb=1024, call_memory_mb=1024)
    assert alone.ok and alone.stdout.strip() == "0", "one process within the limit is not touched"
    dead = run("b = bytearray(900 << 20)\nfor j in range(0, len(b), 4096): b[j] = 1", memory_mb=1024, call_memory_mb=512)
    assert not dead.ok and "call_memory_mb" in dead.error, dead.error


def test_the_call_cgroup_can_be_turned_off_and_bad_sizes_are_refused():
    from orchestra_ray.tools.settings import CodePoolConfig, validate_sandbox_config

    assert run("print(2)", call_memory_mb=0).stdout == "2\n"
    validate_sandbox_config(SandboxConfig(call_memory_mb=0), CodePoolConfig())
    with pytest.raises(ValueError, match="call_memory_mb must be 0"):
        validate_sandbox_config(SandboxConfig(call_memory_mb=32), CodePoolConfig())


def _in_a_workspace():
    import psutil

    return [p.pid for p in psutil.process_iter(["cwd"]) if p.info.get("cwd") == "/workspace"]


@pytest.mark.parametrize("child, stop", [
    ("while True:\n            time.sleep(1)", "timed out"),  # four idle processes: the wall clock
    ("while True:\n            sys.stdout.write('x' * 65536); sys.stdout.flush()", "output exceeded"),  # four floods
])
def test_time_and_output_limits_hold_for_many_processes_at_once(child, stop):
    code = ("import os, sys, time\nfor i in range(4):\n    if os.fork() == 0:\n"
            f"        {child}\nwhile True:\n    time.sleep(1)")
    t0 = time.monotonic()
    res = run(code, timeout_s=2.0)
    assert not res.ok and res.error.startswith(stop), res.error
    assert time.monotonic() - t0 < 6
    time.sleep(0.5)
    assert _in_a_workspace() == [], "every process of the call is gone"
