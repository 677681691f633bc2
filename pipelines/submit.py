"""Training as a Ray job: the `train` command submitted to a cluster's job server, with the project
checkout as its working directory, then its status, logs and stop.

A job runs in a temporary copy of the checkout on the cluster, so relative paths of the config would
land in that copy and vanish with it: they are made absolute on the submitting machine (right for a
local cluster or a filesystem the nodes share) unless the caller keeps them for the cluster to read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, TextIO, Tuple

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.config_load import load_config, relative_paths

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(PROJECT_ROOT, "pipelines", "configs")
# Left out of the upload: environments, history, run outputs, caches and weights. Ray refuses a
# working_dir over 500 MiB, and the run's own data is reached through absolute paths instead.
EXCLUDES = [".git", ".venv", "venv", "runs", ".cache", "__pycache__", ".pytest_cache", "*.egg-info", "build",
            "dist", "*.safetensors", "*.pt", "*.pth", "*.ckpt", "*.bin"]
_EXCLUDED_DIRS = {".git", ".venv", "venv", "runs", ".cache", "build", "dist"}
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class JobError(Exception):
    """A job-server problem, with a one-line message saying what failed and where."""


def default_address() -> str:
    for var in ADDRESS_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return DEFAULT_ADDRESS


# ------------------------------------------------------------------------------------- the job
def path_overrides(cfg: OrchestraConfig) -> List[str]:
    """`key=/absolute/path` for every path key whose value is relative to this machine's directory,
    and the caches: their default lies in the checkout, which the job runs in a temporary copy of."""
    caches = {"policy.cache_dir": cfg.policy.cache_dir, "tools.search.cache_dir": cfg.tools.search.cache_dir}
    return [f"{key}={value}" for key, value in {**caches, **relative_paths(cfg)}.items()]


def _job_config_arg(config_path: str) -> str:
    """The config as the job names it: a shipped config by name, a file by its path in the checkout."""
    path = os.path.abspath(config_path)
    if os.path.dirname(path) == CONFIG_DIR:
        return os.path.splitext(os.path.basename(path))[0]
    rel = os.path.relpath(path, PROJECT_ROOT)
    top = rel.split(os.sep)[0]
    if rel.startswith(os.pardir + os.sep) or top in _EXCLUDED_DIRS:
        raise JobError(f"config file {config_path} is not sent with the job: only the project directory "
                       f"{PROJECT_ROOT} is (without {', '.join(sorted(_EXCLUDED_DIRS))}); put the file there")
    return rel


def job_spec(config_path: str, overrides: List[str], resolve_paths: bool = True) -> Tuple[str, Dict, OrchestraConfig]:
    """Validate the config here and build the job's entrypoint and runtime environment."""
    if not os.path.isfile(os.path.join(PROJECT_ROOT, "pyproject.toml")):
        raise JobError(f"{PROJECT_ROOT} is not a checkout of orchestra-ray, which a job needs as its working "
                       "directory: submit from a source checkout (pip install -e .)")
    cfg = load_config(config_path, overrides)  # a bad config fails here, before anything is sent
    env = {"PYTHONUNBUFFERED": "1"}  # log lines reach `job logs` as they are printed
    frames = os.environ.get("ORCHESTRA_RAY_FRAMES")
    if resolve_paths:
        resolved = path_overrides(cfg)
        keys = {item.split("=", 1)[0] for item in resolved}
        overrides = [item for item in overrides if item.split("=", 1)[0].strip() not in keys] + resolved
        cfg = load_config(config_path, overrides)
        if cfg.run.name and os.path.isdir(os.path.join(cfg.run.root, cfg.run.name)) \
                and os.listdir(os.path.join(cfg.run.root, cfg.run.name)):
            raise FileExistsError(f"run directory {os.path.join(cfg.run.root, cfg.run.name)} already exists; "
                                  "choose another run.name")
        frames = os.path.abspath(frames) if frames else frames
    if frames:
        env["ORCHESTRA_RAY_FRAMES"] = frames
    # The driver sets TOKENIZERS_PARALLELISM and OMP_NUM_THREADS for its workers in ray.init, and Ray
    # fails a driver's ray.init that sets a variable the job's env_vars set too: they stay out.
    entrypoint = shlex.join(["python", "-m", "pipelines.cli", "train", _job_config_arg(config_path), *overrides])
    runtime_env = {"working_dir": PROJECT_ROOT, "excludes": list(EXCLUDES), "env_vars": env}
    return entrypoint, runtime_env, cfg


# ------------------------------------------------------------------------------ the job server
@contextmanager
def _address_vars_unset() -> Iterator[None]:
    # Ray lets these variables win over the address it is given; here the given one wins.
    saved = {v: os.environ.pop(v) for v in ADDRESS_VARS if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _explain(exc: BaseException, address: str, job_id: Optional[str] = None) -> str:
    from ray.exceptions import AuthenticationError

    text = str(getattr(exc, "message", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    # The job server sends its own tracebacks; their last exception line says what went wrong.
    raised = re.findall(r"^\s*(?:\w+\.)*\w*(?:Error|Exception): (.+)$", text, re.MULTILINE)
    if "Traceback (most recent call last)" in text and raised:
        first = raised[-1].strip()
    if isinstance(exc, AuthenticationError):
        if "Authentication failed" in first:
            return (f"the Ray cluster at {address} rejected the authentication token (from RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): use that cluster's token")
        if "Authentication required" in first:
            return (f"the Ray cluster at {address} requires token authentication: set RAY_AUTH_MODE=token and "
                    "give its token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
        return ("RAY_AUTH_MODE=token but no authentication token was found: give the cluster's token in "
                "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token")
    if "status code 404" in first and job_id:
        return f"no job '{job_id}' on the Ray cluster at {address}"
    if "already exists" in text and job_id:
        return f"a job with id '{job_id}' already exists on the Ray cluster at {address}; choose another --job-id"
    return f"Ray job server at {address}: {first}"


def job_client(address: str):
    """A JobSubmissionClient for `address` (a dashboard URL, or a cluster address Ray resolves)."""
    from ray.job_submission import JobSubmissionClient

    # Ray's client narrates every upload step and which default excludes apply; its errors still show.
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _address_vars_unset():
            return JobSubmissionClient(address)
    except ConnectionError:
        raise JobError(f"cannot reach the Ray job server at {address}: no Ray dashboard answers there "
                       "(is the cluster up, and is this its dashboard address, e.g. http://HEAD:8265?)") from None
    except Exception as exc:  # auth, version and address errors of Ray's client
        raise JobError(_explain(exc, address)) from None


def submit(client, entrypoint: str, runtime_env: Dict, job_id: Optional[str] = None) -> str:
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id)
    except Exception as exc:
        raise JobError(_explain(exc, client.get_address(), job_id)) from None


def job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except Exception as exc:
        raise JobError(_explain(exc, client.get_address(), job_id)) from None


def job_logs(client, job_id: str) -> str:
    try:
        return client.get_job_logs(job_id)
    except Exception as exc:
        raise JobError(_explain(exc, client.get_address(), job_id)) from None


def stop_job(client, job_id: str) -> bool:
    """True when the job was running and is asked to stop."""
    try:
        return client.stop_job(job_id)
    except Exception as exc:
        raise JobError(_explain(exc, client.get_address(), job_id)) from None


def follow(client, job_id: str, out: TextIO = sys.stdout):
    """Print the job's logs as they come until it ends; returns its final status."""
    job_info(client, job_id)  # an unknown id is a clear error rather than a closed socket

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except JobError:
        raise
    except Exception as exc:
        raise JobError(_explain(exc, client.get_address(), job_id)) from None
    info = job_info(client, job_id)
    if not info.status.is_terminal():
        raise JobError(f"lost the log stream of job '{job_id}' while it is {info.status}; "
                       f"see `orchestra-ray job status {job_id}`")
    return info.status
