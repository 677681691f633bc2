"""The bubblewrap command line of the code interpreter's sandbox.

The program sees a read-only system (/usr, a few /etc files, the interpreter's own prefix), its
workspace at /workspace and a private /tmp (both memory of a fixed size, nothing on the host's
disk), its own /proc and /dev, no network and a minimal environment. Nothing of the host's home
directories, its /tmp (Ray's session files), Ray's token or the worker's environment is mounted or
passed. A seccomp filter (orchestra_ray/tools/seccomp.py) keeps it from making namespaces or
mounts of its own.

RLIMIT_NPROC is counted per real uid, and real uid 0 is exempt from it. A user namespace made by
root maps the sandbox's uid to real uid 0, so as root bubblewrap runs without one (with every
capability dropped except the two that let the prelude switch uid), and the program runs as a
real uid of its own, distinct for every call in flight. Unprivileged, bubblewrap makes a user
namespace as usual, and the process limit then counts within that namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

WORKSPACE = "/workspace"
SANDBOX_UID_BASE = 1 << 30  # per-call uids (root only): base + (pid << 8 | counter), no real account's
UNPRIVILEGED_UID = 65534  # the uid inside an unprivileged user namespace ("nobody")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "ssl", "os-release")
TOP_LEVEL_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # links into /usr on merged systems

_uid_counter = itertools.count()


def sandbox_uid() -> int:
    """A uid for one call, distinct from every other call in flight on this host."""
    return SANDBOX_UID_BASE + ((os.getpid() << 8) | (next(_uid_counter) & 0xFF))


@lru_cache(maxsize=8)
def python_prefixes(python: str) -> Tuple[str, ...]:
    """Directories the interpreter needs: its (virtual environment's) prefixes and its binary's home,
    outside /usr, none inside another."""
    if python == sys.executable:
        dirs = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        probe = "import json,sys;print(json.dumps([sys.prefix,sys.base_prefix,sys.exec_prefix,sys.base_exec_prefix]))"
        out = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin"})
        dirs = json.loads(out.stdout) if out.returncode == 0 else []
    dirs += [os.path.dirname(os.path.abspath(python)), os.path.dirname(os.path.realpath(python))]
    keep: List[str] = []
    for d in sorted({os.path.realpath(x) for x in dirs} | {os.path.abspath(x) for x in dirs}, key=len):
        if d == "/" or d == "/usr" or d.startswith("/usr/") or not os.path.isdir(d):
            continue  # / is never bound whole; /usr is bound anyway
        if not any(d.startswith(k + "/") for k in keep):
            keep.append(d)
    return tuple(keep)


def bwrap_argv(bwrap: str, python: str, tmp_bytes: int, workspace_bytes: int, program_fd: int, program: str,
               seccomp_fd: Optional[int], env: Dict[str, str], as_root: bool) -> List[str]:
    """bubblewrap's arguments up to and including `--`; the command follows. The program's source
    is copied from `program_fd` into the workspace as `program`; `seccomp_fd` holds the filter."""
    a = [bwrap]
    if as_root:
        a += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
              "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        a += ["--unshare-all", "--unshare-user", "--disable-userns",
              "--uid", str(UNPRIVILEGED_UID), "--gid", str(UNPRIVILEGED_UID)]
    a += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL_DIRS:
        path = "/" + name
        if os.path.islink(path):
            a += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            a += ["--ro-bind", path, path]
    a += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        a += ["--ro-bind-try", "/etc/" + name, "/etc/" + name]
    # /tmp before the interpreter's prefix: a virtual environment under the host's /tmp is bound
    # on top of the private /tmp, not hidden by it.
    a += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    made = {"/etc", "/tmp"}
    for d in python_prefixes(python):
        # Parents that bubblewrap creates by itself can come out 0700, closed to the program's uid.
        parts = d.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if parent not in made:
                a += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        a += ["--ro-bind", d, d]
    a += ["--size", str(workspace_bytes), "--perms", "1777", "--tmpfs", WORKSPACE,
          "--perms", "0644", "--file", str(program_fd), f"{WORKSPACE}/{program}", "--chdir", WORKSPACE, "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    return a + ["--"]
