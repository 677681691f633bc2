"""Checkpoints: loading one never runs code from it; a checkpoint whose files were cut or damaged
after they were written is skipped at resume, naming why; a resumed run's outputs survive damaged
metrics lines and leave the user's own files alone. No Ray."""

import json
import os
import pickle

import pytest
import torch

from orchestra_ray import checkpoint as ckpt
from orchestra_ray.errors import DataError
from orchestra_ray.policy.safe_load import UnsafeCheckpoint, torch_load
from orchestra_ray.policy.sharding import load_sharded, save_sharded
from pipelines.train import Trainer


class Payload:
    """What a hostile checkpoint pickles: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def trained(seed=0):
    torch.manual_seed(seed)
    lm = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    lm(torch.ones(2, 4)).sum().backward()
    opt.step()
    return lm, opt


def test_dcp_checkpoints_load_and_hostile_metadata_is_refused(tmp_path):
    lm, opt = trained()
    save_sharded(lm, opt, str(tmp_path / "dcp"))
    fresh, fresh_opt = trained(seed=1)
    load_sharded(fresh, fresh_opt, str(tmp_path / "dcp"))
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.state_dict()["param_groups"][0]["lr"] == 1e-2  # a non-tensor entry, loaded as data

    marker = tmp_path / "ran"
    with open(tmp_path / "dcp" / ".metadata", "wb") as f:
        pickle.dump(Payload(marker), f)
    with pytest.raises(UnsafeCheckpoint, match=r"\.metadata asks to load posix\.system.*refused"):
        load_sharded(fresh, fresh_opt, str(tmp_path / "dcp"))
    assert not marker.exists(), "no code ran"


def test_learner_state_files_load_data_only(tmp_path):
    good = tmp_path / "learner.pt"
    torch.save({"torch_rng": torch.get_rng_state(), "version": 3, "num_learners": 2}, good)
    assert torch_load(str(good))["version"] == 3
    marker = tmp_path / "ran"
    bad = tmp_path / "optimizer.pt"
    torch.save({"optimizer": Payload(marker)}, bad)
    with pytest.raises(UnsafeCheckpoint, match="optimizer.pt holds more than tensors"):
        torch_load(str(bad))
    assert not marker.exists()


def write_checkpoint(run_dir, step):
    final = ckpt.step_dir(str(run_dir), step)
    tmp = ckpt.temp_dir_for(final)
    os.makedirs(os.path.join(tmp, "policy"))
    with open(os.path.join(tmp, "policy", "model.safetensors"), "wb") as f:
        f.write(os.urandom(4096))
    with open(os.path.join(tmp, "learner.pt"), "wb") as f:
        f.write(os.urandom(512))
    ckpt.commit(tmp, final, {"step": step})
    return final


@pytest.mark.parametrize("damage, why", [
    (lambda c: open(os.path.join(c, "policy", "model.safetensors"), "r+b").truncate(1000), "has 1000 bytes, 4096 were written"),
    (lambda c: _flip(os.path.join(c, "learner.pt")), "learner.pt does not match its checksum"),
    (lambda c: os.remove(os.path.join(c, "learner.pt")), "learner.pt is missing"),
    (lambda c: open(os.path.join(c, "state.json"), "r+b").truncate(7), "state.json is damaged"),
])
def test_resume_takes_the_latest_checkpoint_that_verifies(tmp_path, damage, why):
    first = write_checkpoint(tmp_path, 10)
    second = write_checkpoint(tmp_path, 20)
    assert ckpt.latest_verified(str(tmp_path)) == (second, [])
    damage(second)
    latest, skipped = ckpt.latest_verified(str(tmp_path))
    assert latest == first and len(skipped) == 1 and skipped[0][0] == second and why in skipped[0][1]


def _flip(path):
    with open(path, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))


def test_a_damaged_state_file_is_a_one_line_error(tmp_path):
    c = write_checkpoint(tmp_path, 5)
    with open(os.path.join(c, "state.json"), "wb") as f:
        f.write(b'{"step": 5, "da\xff')
    with pytest.raises(DataError, match="state.json is damaged"):
        ckpt.read_state(c)


def test_resume_outputs_keep_user_files_and_say_what_was_dropped(tmp_path):
    tdir = tmp_path / "trajectories"
    tdir.mkdir()
    for name in ("step_000001.parquet", "step_000003.parquet", "step_notes.txt", "step_000009_mine.csv"):
        (tdir / name).write_bytes(b"x")
    with open(tmp_path / "metrics.jsonl", "wb") as f:
        f.write(b'{"step": 1}\n{"step": 1e999}\n{"step": 2, "x": "\xff\xfe"}\n{"step": 3}\n{"step": 4, "rew')
    tr = Trainer.__new__(Trainer)
    tr.run_dir = str(tmp_path)
    notes = tr.drop_outputs_after(2)
    assert sorted(os.listdir(tdir)) == ["step_000001.parquet", "step_000009_mine.csv", "step_notes.txt"]
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1]
    assert len(notes) == 3 and all("metrics.jsonl line" in n and "dropped" in n for n in notes)
    assert [n.split()[2] for n in notes] == ["2", "3", "5"]
