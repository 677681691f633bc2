"""Checkpoint layout and atomic writes.

    <run>/checkpoints/step_000010/   policy/ (HF format), dcp/ (model and optimizer shards),
                                     learner.pt (RNG states, version), state.json
    <run>/checkpoints/warm_start/    the policy after the supervised stage (the reference model)

A checkpoint is written into a temporary sibling directory, its files flushed to disk, their sizes
and CRC-32 checksums recorded in its state.json, and the directory renamed into place: a directory
with the final name was complete when written. `--resume` takes the latest checkpoint whose files
still match their record (a disk can fill, a file can be cut or damaged later), saying which it
skipped and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from typing import Dict, List, Optional, Tuple

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


_CHUNK = 8 << 20


def _crc(path: str) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
        os.fsync(f.fileno())
    return f"{crc:08x}"


def manifest(root: str) -> Dict[str, List]:
    """[bytes, crc32] of every file under `root` but state.json, by relative path."""
    out: Dict[str, List] = {}
    for here, _, names in os.walk(root):
        for name in names:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, root)
            if rel != "state.json":
                out[rel] = [os.path.getsize(path), _crc(path)]
    return out


def commit(tmp: str, final: str, state: dict) -> None:
    state = {**state, "files": manifest(tmp)}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def verify(ckpt: str) -> Optional[str]:
    """Why the checkpoint cannot be resumed from (None when its files match their record).
    Checkpoints of earlier releases carry no record: their state.json must read, nothing more."""
    try:
        with open(os.path.join(ckpt, "state.json")) as f:
            state = json.load(f)
        int(state["step"])
    except FileNotFoundError:
        return "no state.json"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"state.json is damaged ({type(exc).__name__})"
    files = state.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, list) and len(v) == 2 for v in files.values()):
        return "state.json's record of files is damaged"
    for rel, (size, crc) in files.items():
        path = os.path.join(ckpt, rel)
        if not os.path.isfile(path):
            return f"{rel} is missing"
        if os.path.getsize(path) != size:
            return f"{rel} has {os.path.getsize(path)} bytes, {size} were written"
        if _crc(path) != crc:
            return f"{rel} does not match its checksum"
    return None


def latest_verified(run_dir: str) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The latest step checkpoint that verifies, and (checkpoint, why) of each later one skipped."""
    root = checkpoints_dir(run_dir)
    steps = sorted((int(m.group(1)) for d in (os.listdir(root) if os.path.isdir(root) else []) if (m := _STEP.match(d))),
                   reverse=True)
    skipped = []
    for step in steps:
        path = step_dir(run_dir, step)
        why = verify(path)
        if why is None:
            return path, skipped
        skipped.append((path, why))
    return None, skipped


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
    from orchestra_ray.errors import DataError

    try:
        with open(os.path.join(ckpt, "state.json")) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{ckpt}/state.json is damaged ({exc})") from None
