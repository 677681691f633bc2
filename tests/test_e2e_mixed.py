"""The mixed-family config end to end on a real local Ray cluster with token authentication on:
FRAMES replay, domain tasks on SQLite and arithmetic through the sandboxed code interpreter, with
per-family metrics; then no API key or Ray auth token may appear in any file of the run directory."""

import json
import os
import secrets

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS, GROUP = 6, 4
FAMILIES = {"frames", "domain", "arithmetic"}
SECRET_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN")


@pytest.fixture(scope="module")
def run(tmp_path_factory, frames_dir):
    root = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    secret_values = {name: f"sk-{name.lower()}-{secrets.token_hex(16)}" for name in SECRET_VARS}
    for name, value in secret_values.items():
        mp.setenv(name, value)
    # Token authentication on: the local cluster the run starts authenticates every call with the
    # token in ~/.ray/auth_token, generated on first use (a process keeps the token it first read,
    # so the test uses that file rather than a token of its own).
    mp.setenv("RAY_AUTH_MODE", "token")
    mp.delenv("RAY_AUTH_TOKEN", raising=False)
    mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    try:
        args = [
            "train", "mixed",
            f"data.path={frames_dir}",
            "data.max_train_questions=48",
            "data.max_heldout_questions=4",
            "families.max_heldout=4",
            "families.domain.tasks_per_domain=16",
            "families.arithmetic.problems=40",
            f"run.root={root}",
            "run.name=mixed",
            f"policy.cache_dir={cache}",
            "policy.tiny.pretrain_steps=100",
            f"rollout.tasks_per_step={TASKS}",
            f"rollout.group_size={GROUP}",
            "rollout.max_turns=3",
            "rollout.max_new_tokens=48",
            "warm_start.examples=24",
            "warm_start.family_examples.domain=8",
            "warm_start.epochs=1",
            "trainer.steps=1",
            "reward.filter_zero_variance=false",
            "eval.bootstrap_samples=100",
            "tools.sandbox.timeout_s=5",
        ]
        assert main(args) == 0
    finally:
        mp.undo()
    with open(os.path.expanduser("~/.ray/auth_token")) as f:
        token = f.read().strip()
    assert len(token) >= 32
    return os.path.join(root, "mixed"), list(secret_values.values()) + [token]


def test_every_family_trains_with_per_family_metrics(run):
    run_dir, _ = run
    rows = pq.read_table(os.path.join(run_dir, "trajectories", "step_000001.parquet")).to_pylist()
    assert len(rows) == TASKS * GROUP
    assert {r["family"] for r in rows} == FAMILIES
    # Each family is shown its own tools: domain tasks a domain's functions, arithmetic the interpreter.
    assert {r["toolset"] for r in rows if r["family"] == "arithmetic"} == {"arithmetic"}
    assert all(r["toolset"].startswith("domain:") for r in rows if r["family"] == "domain")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        step = json.loads(f.readline())
    assert set(step["families"]) == FAMILIES
    for fam, m in step["families"].items():
        for key in ("reward", "accuracy", "cost", "tool_share"):
            assert key in m, (fam, key)
        assert 0 <= m["accuracy"] <= 1
    for label in ("warm_start", "final"):
        with open(os.path.join(run_dir, "eval", f"{label}.json")) as f:
            result = json.load(f)
        assert set(result["families"]) == FAMILIES
        assert result["heldout_questions"] == {"frames": 4, "domain": 4, "arithmetic": 4}
        # Domain episodes also say how close their calls came to the gold actions.
        domain = result["families"]["domain"]
        assert 0 <= domain["function_match"] <= 1 and 0 <= domain["argument_match"] <= 1
        assert "function_match" not in result["families"]["frames"]


def test_no_api_key_or_auth_token_in_any_run_file(run):
    run_dir, needles = run
    files = 0
    for base, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                data = f.read()
            files += 1
            for needle in needles:
                assert needle.encode() not in data, f"a secret value is written in {os.path.relpath(path, run_dir)}"
    assert files >= 10  # config, metrics, trajectories, evaluations, checkpoints were all searched
