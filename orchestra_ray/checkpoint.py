"""Checkpoint layout and atomic writes.

    <run>/checkpoints/step_000010/   policy/ (HF format), dcp/ (model and optimizer shards),
                                     learner.pt (RNG states, version), state.json
    <run>/checkpoints/warm_start/    the policy after the supervised stage (the reference model)

A checkpoint is written into a temporary sibling directory and renamed into place, so a directory
with the final name is always complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

_STEP = re.compile(r"^step_(\d{6})$")


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def step_dir(run_dir: str, step: int) -> str:
    return os.path.join(checkpoints_dir(run_dir), f"step_{step:06d}")


def temp_dir_for(final: str) -> str:
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)  # a previous run died while writing it
    os.makedirs(tmp)
    return tmp


def commit(tmp: str, final: str, state: dict) -> None:
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def latest_checkpoint(run_dir: str) -> Optional[str]:
    root = checkpoints_dir(run_dir)
    if not os.path.isdir(root):
        return None
    steps = [int(m.group(1)) for d in os.listdir(root) if (m := _STEP.match(d)) and os.path.isfile(os.path.join(root, d, "state.json"))]
    return step_dir(run_dir, max(steps)) if steps else None


def check_resumable(ckpt: str, num_learners: int) -> None:
    """A single learner's checkpoint of earlier releases (optimizer.pt, no dcp/) resumes on one
    learner only: its optimizer state is not keyed by parameter name for a group to shard."""
    from orchestra_ray.errors import ConfigError

    legacy = os.path.isfile(os.path.join(ckpt, "optimizer.pt")) and not os.path.isdir(os.path.join(ckpt, "dcp"))
    if legacy and num_learners > 1:
        raise ConfigError(f"{ckpt} holds a single learner's optimizer state (optimizer.pt, no dcp/): "
                          "resume it with trainer.num_learners=1")


def read_state(ckpt: str) -> dict:
    with open(os.path.join(ckpt, "state.json")) as f:
        return json.load(f)
