"""The built wheel on its own: installed (not editable) into a fresh virtual environment, run from an
empty directory, `orchestra-ray` finds its shipped config and FRAMES data inside the installed
package, caches in the user's cache directory and trains one GRPO step."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARENT_SITE = sysconfig.get_paths()["purelib"]  # the dependencies, already installed here
SMALL = ["trainer.steps=1", "run.name=pkg", "data.max_train_questions=16", "data.max_heldout_questions=4",
         "rollout.num_workers=1", "rollout.tasks_per_step=2", "rollout.group_size=2", "rollout.max_turns=2",
         "rollout.max_new_tokens=16", "warm_start.examples=8", "warm_start.epochs=1", "warm_start.batch_size=4",
         "policy.tiny.pretrain_steps=20", "eval.enabled=false", "cluster.num_cpus=2", "cluster.include_dashboard=false"]


def _run(args, **kw):
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{args[:3]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's bin directory, an empty working directory, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # a clean copy: no build/ left over in the checkout can slip into the wheel
    for name in ("orchestra_ray", "actors", "pipelines"):
        shutil.copytree(os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)])
    wheel = next((tmp / "dist").glob("orchestra_ray-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # A plain path line: the parent's own .pth files (the editable install's finder) are not run.
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write(PARENT_SITE + "\n")
    _run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "ORCHESTRA_RAY_CACHE", "ORCHESTRA_RAY_FRAMES", "RAY_ADDRESS")}
    env["XDG_CACHE_HOME"] = str(tmp / "user-cache")
    work = tmp / "empty"
    work.mkdir()
    return venv / "bin", work, env, site


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    bin_dir, work, env, site = installed
    out = _run([str(bin_dir / "python"), "-c", "import orchestra_ray, pipelines.cli; print(orchestra_ray.__file__); "
                "print(pipelines.cli.CONFIG_DIR)"], cwd=work, env=env).stdout.split()
    assert all(p.startswith(site) for p in out), out
    printed = _run([str(bin_dir / "orchestra-ray"), "--version"], cwd=work, env=env).stdout.strip()
    assert printed == f"orchestra-ray {version('orchestra-ray')}"


def test_quickstart_trains_from_an_empty_directory(installed):
    bin_dir, work, env, site = installed
    _run([str(bin_dir / "orchestra-ray"), "train", "quickstart", *SMALL], cwd=work, env=env)
    run_dir = work / "runs" / "pkg"
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f if line.strip()] == [1]
    import yaml

    with open(run_dir / "config.yaml") as f:
        cfg = yaml.safe_load(f)
    assert cfg["data"]["path"].startswith(site)  # the FRAMES replay data shipped in the wheel
    cache = env["XDG_CACHE_HOME"] + "/orchestra-ray"
    assert cfg["policy"]["cache_dir"] == cache and any(n.startswith("tiny-qwen3-") for n in os.listdir(cache))
    assert sorted(os.listdir(work)) == ["runs"]  # nothing else written to the working directory
