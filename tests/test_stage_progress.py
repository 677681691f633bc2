"""The long stages' progress (pre-training the tiny base model, the warm start): in a log, a line
every few seconds with the rate and the time left; on a terminal, a bar. The warm start is taken
by the learner actor a chunk at a time, reported by the driver, with the same losses as in one call."""

import io
import random
import re

import pytest
import ray

from actors.common import ActorResources
from actors.learner import LearnerSpec
from actors.learner_group import start_learner
from actors.weight_transport import start_weight_store
from orchestra_ray.config import TinyModelConfig, TrainerConfig, WarmStartConfig
from orchestra_ray.policy.tiny_model import build_tiny_policy
from pipelines.progress import Progress
from pipelines.warm_start import fine_tune

LINE = re.compile(r"^(.+): (\d+)/(\d+) (\w+)  ([\d.]+) \4/s  elapsed \d\d:\d\d, (\d\d:\d\d|\?) left$")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def progress_lines(text):
    return [m for m in map(LINE.match, text.splitlines()) if m]


def test_log_gets_a_line_every_few_seconds_with_rate_and_time_left():
    out, clock = io.StringIO(), Clock()
    report = Progress(out, every_s=5.0, clock=clock).stage("warm start", "batches")
    for t, done in ((0, 0), (2, 10), (6, 30), (7, 35), (12, 60), (20, 100)):
        clock.now = 100.0 + t
        report(done, 100)
    assert out.getvalue().splitlines() == [
        "warm start: 100 batches",
        "warm start: 30/100 batches  5.00 batches/s  elapsed 00:06, 00:14 left",
        "warm start: 60/100 batches  5.00 batches/s  elapsed 00:12, 00:08 left",
    ]  # none at the end: the stage's own summary follows


def test_terminal_gets_a_bar_that_closes_at_the_end():
    out = Terminal()
    report = Progress(out).stage("warm start", "batches")
    for done in range(0, 5):
        report(done, 4)
    assert "warm start 0/4" in out.getvalue() and report.bar is None


def test_pretraining_reports_each_step(tmp_path):
    out = io.StringIO()
    cfg = TinyModelConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, max_position_embeddings=64, pretrain_steps=6,
                          pretrain_seq_len=16, pretrain_batch_size=2)
    docs = ["The Seine flows through Paris.", "call_expert answer relay"] * 10
    build_tiny_policy(cfg, docs, str(tmp_path / "m"), docs, on_step=Progress(out, every_s=0.0).stage("pre-training", "steps"))
    lines = progress_lines(out.getvalue())
    assert out.getvalue().startswith("pre-training: 6 steps\n")
    assert [int(m.group(2)) for m in lines] == [1, 2, 3, 4, 5] and all(float(m.group(5)) > 0 for m in lines)


@pytest.fixture(scope="module")
def learners(local_ray, uneven_policy):
    t = TrainerConfig(lr=1e-3, num_cpus=0.25, torch_threads=1)
    spec = LearnerSpec(uneven_policy, t, "float32", "cpu", 0, ActorResources(0.25))
    return [start_learner(spec, start_weight_store()) for _ in range(2)]


def test_warm_start_in_chunks_reports_progress_and_matches_one_call(learners):
    chunked, whole = learners
    rng = random.Random(1)
    d = [{"token_ids": [rng.randrange(3, 250) for _ in range(n)], "loss_mask": [0] * 3 + [1] * (n - 3)}
         for n in (rng.randrange(8, 30) for _ in range(20))]
    w = WarmStartConfig(epochs=2, batch_size=2, lr=1e-3)
    out = io.StringIO()
    losses = fine_tune(chunked, d, w, 0, Progress(out, every_s=0.0).stage("warm start", "batches"))
    assert losses == pytest.approx(ray.get(whole.warm_start.remote(d, w.epochs, w.batch_size, w.lr, 0)), rel=1e-6)
    assert out.getvalue().startswith("warm start: 20 batches\n")
    lines = progress_lines(out.getvalue())
    assert lines and all(int(m.group(3)) == 20 and m.group(6) != "?" for m in lines)
