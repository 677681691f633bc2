"""The sandbox without Ray: real bubblewrap, real subprocesses. Results and observations, limits,
one-line config errors, and the message when bubblewrap is missing or cannot make namespaces."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import time

import pytest

from orchestra_ray.tools.sandbox import CodeResult, SandboxUnavailable, check_sandbox, remove_stale_workspaces, run_code
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig, validate_sandbox_config

FAST = SandboxConfig(timeout_s=3.0, cpu_seconds=2)


def test_a_program_runs_and_its_output_is_the_observation():
    res = run_code("print(6 * 7)", FAST)
    assert (res.ok, res.stdout, res.stderr, res.exit_code, res.error, res.truncated) == (True, "42\n", "", 0, "", False)
    assert 0 < res.wall_s < 3
    assert res.observation(4000) == "42"


def test_the_sandboxed_interpreter_sees_the_virtual_environment_packages():
    res = run_code("import numpy as np\nprint(int(np.arange(5).sum()))", FAST)
    assert res.ok, res.observation(2000)
    assert res.stdout == "10\n"


def test_an_exception_is_an_error_observation_with_the_traceback_tail():
    res = run_code("print('before')\n1 / 0", FAST)
    assert not res.ok and res.exit_code == 1 and res.error == "exit code 1"
    obs = res.observation(4000)
    assert obs.startswith("before\nTraceback")
    assert "ZeroDivisionError: division by zero" in obs
    assert obs.endswith("\nerror: exit code 1")


def test_the_observation_fits_max_chars_and_keeps_stdout_head_stderr_tail_and_error():
    res = run_code("print('A' * 3000)\nraise ValueError('the end')", FAST)
    obs = res.observation(400)
    assert len(obs) <= 400
    assert obs.startswith("AAAA")
    assert "ValueError: the end" in obs and obs.endswith("error: exit code 1")
    assert "[output cut]" in obs
    # A failure with no output at all still says why.
    assert CodeResult(False, "", "", None, "timed out after 3.0s", 3.0, False).observation(4000) == "error: timed out after 3.0s"
    assert CodeResult(True, "", "", 0, "", 0.1, False).observation(4000) == "(no output)"


def test_output_beyond_max_output_chars_is_kept_cut_and_flagged():
    res = run_code("print('x' * 10000)", dataclasses.replace(FAST, max_output_chars=500))
    assert res.ok and res.truncated and len(res.stdout) == 500
    assert res.observation(500).endswith("[output cut]") and len(res.observation(500)) <= 500


def test_wall_clock_timeout_kills_the_program_and_keeps_what_it_printed():
    t0 = time.monotonic()
    res = run_code("import time\nprint('started')\ntime.sleep(30)", dataclasses.replace(FAST, timeout_s=1.0))
    assert time.monotonic() - t0 < 3
    assert not res.ok and res.exit_code is None and res.error == "timed out after 1.0s"
    assert res.stdout == "started\n"
    assert res.observation(4000) == "started\nerror: timed out after 1.0s"


def test_cpu_limit_stops_a_busy_loop():
    res = run_code("while True:\n    pass", dataclasses.replace(FAST, cpu_seconds=1, timeout_s=5.0))
    assert not res.ok and res.error.startswith("killed by signal SIGXCPU")
    assert res.wall_s < 4


def test_file_size_limit():
    res = run_code("open('big', 'wb').write(b'x' * (3 << 20))", dataclasses.replace(FAST, max_file_mb=1))
    assert not res.ok and "File too large" in res.stderr


def test_non_string_code_is_an_error_result():
    res = run_code(None, FAST)  # type: ignore[arg-type]
    assert not res.ok and res.error == "code must be a string"


def test_missing_bwrap_says_how_to_install_it():
    cfg = dataclasses.replace(FAST, bwrap="/nonexistent/bwrap")
    msg = check_sandbox(cfg)
    assert msg is not None and "\n" not in msg
    assert "apt-get install bubblewrap" in msg and "make setup" in msg and "/nonexistent/bwrap" in msg
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_code("print(1)", cfg)


def test_bwrap_that_cannot_make_namespaces_is_reported_with_its_error(tmp_path):
    # A stand-in that fails the way bubblewrap does where user namespaces are forbidden.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    msg = check_sandbox(dataclasses.replace(FAST, bwrap=str(fake)))
    assert msg == "bubblewrap cannot create the sandbox here: bwrap: No permissions to create new namespace"


def test_the_real_bwrap_is_available_here():
    assert check_sandbox(FAST) is None


def test_a_program_exiting_1_with_a_bwrap_like_message_is_not_mistaken_for_a_broken_sandbox():
    res = run_code("import sys\nsys.stderr.write('bwrap: No permissions to create new namespace\\n')\nsys.exit(1)", FAST)
    assert not res.ok and res.error == "exit code 1"


def test_mode_none_runs_in_its_own_workspace_with_a_minimal_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-none-mode")
    res = run_code("import os\nprint(os.getcwd())\nprint(sorted(os.environ))", dataclasses.replace(FAST, mode="none"))
    assert res.ok, res.observation(2000)
    cwd, env = res.stdout.splitlines()
    assert os.path.basename(cwd).startswith("orchestra-sandbox-") and cwd != os.getcwd()
    assert not os.path.exists(cwd)  # removed after the call
    assert "OPENAI_API_KEY" not in env and "sk-test-none-mode" not in res.stdout


def test_workspaces_of_dead_processes_are_removed_and_others_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f"orchestra-sandbox-{dead.pid}-a1", f"orchestra-sandbox-{os.getpid()}-b2", "orchestra-sandbox-c3", "other-dir"):
        (tmp_path / name).mkdir()
    assert remove_stale_workspaces(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([f"orchestra-sandbox-{os.getpid()}-b2", "orchestra-sandbox-c3", "other-dir"])


def test_mode_none_still_times_out():
    res = run_code("import time\ntime.sleep(30)", dataclasses.replace(FAST, mode="none", timeout_s=1.0))
    assert not res.ok and res.error == "timed out after 1.0s"


@pytest.mark.parametrize("sandbox, pool, message", [
    (dict(mode="docker"), {}, "tools.sandbox.mode must be 'bwrap' or 'none', got 'docker'"),
    (dict(cpu_seconds=0), {}, "tools.sandbox.cpu_seconds must be an integer >= 1, got 0"),
    (dict(memory_mb=16), {}, "tools.sandbox.memory_mb must be an integer >= 64, got 16"),
    (dict(max_processes=0), {}, "tools.sandbox.max_processes must be an integer >= 1, got 0"),
    (dict(max_open_files=3), {}, "tools.sandbox.max_open_files must be an integer >= 16, got 3"),
    (dict(timeout_s=0), {}, "tools.sandbox.timeout_s must be a number > 0, got 0"),
    (dict(bwrap=""), {}, "tools.sandbox.bwrap must name the bubblewrap binary, got ''"),
    ({}, dict(max_workers=0), "tools.code_pool.max_workers must be an integer >= 1, got 0"),
    ({}, dict(min_workers=5, max_workers=2), "tools.code_pool.min_workers (5) must not exceed tools.code_pool.max_workers (2)"),
    ({}, dict(idle_s=0.0), "tools.code_pool.idle_s must be a number > 0, got 0.0"),
    ({}, dict(num_cpus=-1.0), "tools.code_pool.num_cpus must be a number >= 0, got -1.0"),
])
def test_bad_config_is_one_line_naming_the_key(sandbox, pool, message):
    with pytest.raises(ValueError) as err:
        validate_sandbox_config(SandboxConfig(**sandbox), CodePoolConfig(**pool))
    assert str(err.value) == message


def test_defaults_are_valid():
    validate_sandbox_config(SandboxConfig(), CodePoolConfig())


def test_a_prestarted_sandbox_serves_one_call_and_a_dead_one_is_replaced():
    """After a call the next call's sandbox is made in the background; it holds nothing of the call
    before (own /workspace, /tmp and, as root, uid), and one that died meanwhile is replaced."""
    from orchestra_ray.tools import sandbox_start

    cfg = dataclasses.replace(FAST, timeout_s=4.0)  # a configuration of its own: its own waiting sandbox
    probe = "import os\nprint(os.getuid(), sorted(os.listdir('.')), sorted(os.listdir('/tmp')))\n" \
            "open('left', 'w').write('x'); open('/tmp/left', 'w').write('x')"
    first = run_code(probe, cfg)
    assert first.ok, first
    assert sandbox_start.wait_prestarted(cfg), "no sandbox was made for the next call"
    waiting = sandbox_start._waiting[repr(cfg)]
    second = run_code(probe, cfg)
    assert second.ok and repr(cfg) not in sandbox_start._waiting or sandbox_start._waiting[repr(cfg)] is not waiting
    assert waiting.proc.returncode is not None, "the call ran in the sandbox made for it"
    uid1, uid2 = (int(r.stdout.split()[0]) for r in (first, second))
    assert (uid1 != uid2) if os.geteuid() == 0 else uid1 == uid2
    # nothing of the call before (a virtual environment under the host's /tmp shows as its top folder there)
    workspace, tmp = second.stdout.split(" ", 1)[1].strip().split("] [")
    assert workspace == "['main.py'" and "'left'" not in tmp, "nothing of the call before"

    assert sandbox_start.wait_prestarted(cfg)
    dead = sandbox_start._waiting[repr(cfg)].proc.pid
    os.killpg(dead, 9)
    while os.waitid(os.P_PID, dead, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # it has died
        time.sleep(0.01)
    third = run_code("print('still')", cfg)
    assert third.ok and third.stdout == "still\n"
    assert run_code("print(2)", dataclasses.replace(cfg, prestart=False)).stdout == "2\n"
