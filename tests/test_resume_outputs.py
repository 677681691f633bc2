"""What a resumed run drops: the step files and metrics lines of steps after its checkpoint (all
of them when no step checkpoint exists yet), a temporary file of an interrupted write, and a
metrics line cut short by the kill."""

import json
import os

import pytest

from pipelines.train import Trainer


def run_dir_with_steps(path, steps):
    tdir = path / "trajectories"
    tdir.mkdir()
    for s in steps:
        (tdir / f"step_{s:06d}.parquet").write_bytes(b"x")
    (tdir / f"step_{steps[-1] + 1:06d}.parquet.tmp").write_bytes(b"partial")
    with open(path / "metrics.jsonl", "w") as f:
        for s in steps:
            f.write(json.dumps({"step": s, "reward": 0.5}) + "\n")
        f.write('{"step": %d, "rew' % (steps[-1] + 1))  # the kill cut this line short
    tr = Trainer.__new__(Trainer)  # only the run directory matters here
    tr.run_dir = str(path)
    return tr


@pytest.mark.parametrize("checkpoint_step", [0, 2])
def test_outputs_after_the_checkpoint_are_dropped(tmp_path, checkpoint_step):
    tr = run_dir_with_steps(tmp_path, [1, 2, 3])
    tr.drop_outputs_after(checkpoint_step)
    left = sorted(os.listdir(tmp_path / "trajectories"))
    assert left == [f"step_{s:06d}.parquet" for s in range(1, checkpoint_step + 1)]
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(1, checkpoint_step + 1))
