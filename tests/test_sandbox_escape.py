"""Escape attempts against the code interpreter, through the real pool on a real local Ray cluster
and real bubblewrap. Each attack must be contained and come back as a tool error (or, for reads,
without the secret), and the pool must answer an ordinary call afterwards.

Where it shows the attack itself works, the same program is also run without the sandbox
(mode "none", in this test process): only the sandbox stands between it and the host.
"""

from __future__ import annotations

import dataclasses
import glob
import http.server
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

import pytest
import ray

from actors.code_interpreter import start_code_pool
from orchestra_ray.tools.bwrap import SANDBOX_UID_BASE
from orchestra_ray.tools.sandbox import run_code
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig

SANDBOX = SandboxConfig(timeout_s=3.0, cpu_seconds=2, memory_mb=512, max_processes=32, max_output_chars=2000)
UNSAFE = dataclasses.replace(SANDBOX, mode="none")
API_KEY = f"sk-test-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def pool():
    # Set before Ray starts, so every Ray worker (the code workers included) inherits it.
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = API_KEY
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    handle = start_code_pool(SANDBOX, CodePoolConfig(min_workers=1, max_workers=2, idle_s=60.0))
    yield handle
    ray.kill(handle)
    ray.shutdown()
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old


def call(pool, code: str):
    return ray.get(pool.execute.remote(code))


def assert_pool_still_answers(pool):
    res = call(pool, "print(6*7)")
    assert res.ok and res.stdout == "42\n", res.observation(2000)
    assert ray.get(pool.stats.remote())["replaced"] == 0  # no worker was brought down


def processes_of(uid: int):
    found = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                real_uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if real_uid == uid:
            found.append(status)
    return found


def assert_nothing_left_running(res):
    """No process of the call is left on the host. The program printed its uid first; as root that
    uid is the call's own (see orchestra_ray/tools/bwrap.py), unprivileged it is ours and tells nothing."""
    uid = int(res.stdout.split()[0])
    if os.geteuid() != 0:
        return
    assert uid >= SANDBOX_UID_BASE
    deadline = time.monotonic() + 3
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(uid) == []


# ------------------------------------------------------------------------------------ network
class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"reached the host")

    def log_message(self, *args):
        """Quiet: the test reads what the sandbox got back, not the server's log."""


def test_no_network_to_a_server_on_the_host_loopback(pool):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.hits = []
    code = ("import urllib.request\n"
            f"print(urllib.request.urlopen('http://127.0.0.1:{server.server_address[1]}/leak', timeout=2).read())")
    try:
        res = call(pool, code)
        assert not res.ok and "Connection refused" in res.stderr, res.observation(2000)
        assert _Recorder.hits == []
        control = run_code(code, UNSAFE)
        assert control.ok and "reached the host" in control.stdout and _Recorder.hits == ["/leak"]
    finally:
        server.shutdown()
    assert_pool_still_answers(pool)


def test_no_connection_to_the_ray_cluster(pool):
    host, port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
    code = f"import socket\nsocket.create_connection(({host!r}, {port}), timeout=2)\nprint('connected')"
    res = call(pool, code)
    assert not res.ok and "connected" not in res.stdout, res.observation(2000)
    assert run_code(code, UNSAFE).stdout == "connected\n"
    assert_pool_still_answers(pool)


# -------------------------------------------------------------------------------------- files
def test_writes_outside_the_workspace_do_not_reach_the_host(pool, tmp_path):
    existing = tmp_path / "host_file.txt"
    existing.write_text("original")
    created = tmp_path / "new_file.txt"
    in_usr = f"/usr/sandbox-escape-{uuid.uuid4().hex}"
    in_prefix = os.path.join(sys.prefix, f"escape-{uuid.uuid4().hex}")  # the interpreter's tree is bound read-only
    for target in (existing, created, in_usr, in_prefix, "/etc/escape-test"):
        res = call(pool, f"open({str(target)!r}, 'w').write('pwned')")
        assert not res.ok and "Error" in res.stderr, (target, res.observation(2000))
    assert existing.read_text() == "original"
    assert not created.exists() and not os.path.exists(in_usr) and not os.path.exists(in_prefix)
    control = run_code(f"open({str(existing)!r}, 'w').write('pwned')", UNSAFE)
    assert control.ok and existing.read_text() == "pwned"
    assert_pool_still_answers(pool)


def test_secrets_are_not_readable(pool):
    # A token file under /tmp/ray (where Ray keeps its session files), Ray's own token in the home
    # directory when this Ray version made one, and the API key in the workers' environment.
    fake_dir = f"/tmp/ray/sandbox-escape-{uuid.uuid4().hex}"
    os.makedirs(fake_dir)
    fake_token = os.path.join(fake_dir, "auth_token")
    secret = f"fake-ray-token-{uuid.uuid4().hex}"
    with open(fake_token, "w") as f:
        f.write(secret)
    ray_token_path = os.path.expanduser("~/.ray/auth_token")
    secrets = [secret, API_KEY]
    if os.path.isfile(ray_token_path):
        with open(ray_token_path) as f:
            secrets.append(f.read().strip())
    code = (
        "import glob, os\n"
        f"paths = [{fake_token!r}, {ray_token_path!r}, '/root/.ray/auth_token', os.path.expanduser('~/.ray/auth_token')]\n"
        "paths += sorted(glob.glob('/tmp/ray/**', recursive=True))[:500] + glob.glob('/proc/*/environ')\n"
        "for p in paths:\n"
        "    try:\n"
        "        print(p, open(p, errors='replace').read()[:300])\n"
        "    except Exception as exc:\n"
        "        print(p, type(exc).__name__)\n"
        "print(dict(os.environ))\n"
    )
    try:
        res = call(pool, code)
        seen = res.stdout + res.stderr + res.observation(100_000)
        assert "'HOME': '/workspace'" in res.stdout, res.observation(2000)  # the program did run
        for s in secrets:
            assert s not in seen
        assert "OPENAI_API_KEY" not in seen
        # The control walks the host's whole /tmp/ray (every session of the machine, hundreds of
        # MB after a test run): give it time, or a busy machine times it out before it prints.
        control = run_code(code, dataclasses.replace(UNSAFE, max_output_chars=100_000, timeout_s=60, cpu_seconds=60))
        assert secret in control.stdout, control.error
    finally:
        shutil.rmtree(fake_dir, ignore_errors=True)
    assert_pool_still_answers(pool)


# ---------------------------------------------------------------------------------- resources
def test_fork_bomb(pool):
    t0 = time.monotonic()
    res = call(pool, "import os\nprint(os.getuid())\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert not res.ok and (res.error.startswith("timed out") or res.error.startswith("killed by signal")), res.error
    assert time.monotonic() - t0 < SANDBOX.timeout_s + 3
    assert_nothing_left_running(res)
    assert_pool_still_answers(pool)


def test_process_limit_holds_inside_the_sandbox(pool):
    code = ("import os, time\nprint(os.getuid())\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError:\n    raise SystemExit(f'fork refused after {n} children')")
    res = call(pool, code)
    assert not res.ok and res.error == "exit code 1"
    refused_after = int(res.stderr.split("fork refused after ")[1].split()[0])
    assert 0 < refused_after < SANDBOX.max_processes
    assert_nothing_left_running(res)
    assert_pool_still_answers(pool)


def test_memory_bomb(pool):
    res = call(pool, "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))")
    assert not res.ok and "MemoryError" in res.stderr, res.observation(2000)
    assert_pool_still_answers(pool)


def test_busy_infinite_loop_is_stopped_by_the_cpu_limit(pool):
    res = call(pool, "while True:\n    pass")
    assert not res.ok and res.error.startswith("killed by signal SIGXCPU"), res.error
    assert res.wall_s < SANDBOX.timeout_s + 1
    assert_pool_still_answers(pool)


def test_idle_infinite_loop_is_stopped_by_the_wall_clock(pool):
    res = call(pool, "import os, time\nprint(os.getuid(), 'waiting')\nwhile True:\n    time.sleep(1)")
    assert not res.ok and res.error == "timed out after 3.0s"
    assert res.observation(2000).endswith(" waiting\nerror: timed out after 3.0s")
    assert_nothing_left_running(res)
    assert_pool_still_answers(pool)


def test_a_gigabyte_of_output_is_cut_off_early(pool):
    t0 = time.monotonic()
    res = call(pool, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)")
    assert time.monotonic() - t0 < 3  # stopped at the cap, not after writing 1 GB
    assert not res.ok and res.truncated and res.error.startswith("output exceeded")
    assert len(res.stdout) <= SANDBOX.max_output_chars and len(res.observation(500)) <= 500
    assert_pool_still_answers(pool)


@pytest.mark.parametrize("attack", [
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal\nos.kill(1, signal.SIGKILL)",
    "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)",
])
def test_killing_the_parent_or_its_group_does_not_reach_the_worker(pool, attack):
    res = call(pool, attack)
    assert not res.ok, res.observation(2000)
    assert_pool_still_answers(pool)


# --------------------------------------------------------------------------------- workspaces
def _on_host(marker: str):
    return glob.glob(os.path.join(tempfile.gettempdir(), "**", marker), recursive=True)


@pytest.mark.parametrize("ending", ["time.sleep(1.5)", "while True:\n    time.sleep(1)"])
def test_the_workspace_is_memory_and_nothing_reaches_the_host_disk(pool, ending):
    """The workspace is a size-limited tmpfs of the sandbox's own: while the call runs (and on a
    time-out) nothing it writes is on the host's disk, so nothing is left to clean up."""
    marker = f"marker-{uuid.uuid4().hex}"
    probe = ("import time\nopen(%r, 'w').write('x')\n"
             "print([l.split()[4] for l in open('/proc/self/mountinfo') if ' - tmpfs ' in l and l.split()[4] == '/workspace'])\n"
             "import sys; sys.stdout.flush()\n%s" % (marker, ending))
    ref = pool.execute.remote(probe)
    time.sleep(0.7)
    assert _on_host(marker) == []
    res = ray.get(ref)
    assert "['/workspace']" in res.stdout, res.observation(2000)
    assert _on_host(marker) == []
    assert_pool_still_answers(pool)


def test_every_call_gets_a_fresh_workspace_and_tmp(pool):
    first = call(pool, "import os\nopen('state.txt', 'w').write('x')\nopen('/tmp/state.txt', 'w').write('x')\n"
                       "print(sorted(os.listdir('.')), os.getcwd())")
    assert first.ok and first.stdout == "['main.py', 'state.txt'] /workspace\n", first.observation(2000)
    second = call(pool, "import os\nprint(sorted(os.listdir('.')), os.path.exists('/tmp/state.txt'))")
    assert second.ok and second.stdout == "['main.py'] False\n", second.observation(2000)
