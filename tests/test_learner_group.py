"""The sharded learner group on a real local Ray cluster (gloo, CPU): two ranks take the update one
learner takes on the same batch (warm start, reference log-probs, GRPO step), publish the whole
version, checkpoint through DCP so that another number of ranks resumes, and a killed rank fails
the group's next call with one line naming it.

Tolerance: 1e-6 relative, in float64, where float32 rounding cannot hide a wrong share, token count
or sum (one would move a statistic by 1e-2). In float32 the same comparison gives weights and loss
within ~1e-7 relative, but the KL statistic (a mean of k3 ~ d^2/2 over differences d of near-equal
log-probs) only within ~1e-5: two ranks sum gradients in another order, and the second mini-batch's
log-probs move by one float32 ulp.
"""

import os
import signal
import time

import numpy as np
import pytest
import ray
import torch

from actors.learner import LearnerSpec
from actors.learner_group import start_learner, stop_learner
from actors.reference_model import ReferenceSpec, start_reference
from actors.weight_transport import pull_if_newer, start_weight_store
from actors.common import ActorResources
from orchestra_ray.config import TrainerConfig
from orchestra_ray.errors import LearnerLost
from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.sharding import load_sharded
from orchestra_ray.policy.tiny_model import load_policy
from orchestra_ray.rollout.sample import TrainBatch

RTOL = 1e-6
DTYPE = "float64"


@pytest.fixture(scope="module")
def policy(local_ray, uneven_policy):
    return uneven_policy


def spec(policy, n, **trainer):
    t = TrainerConfig(lr=1e-3, kl_coef=0.1, mini_batches=2, micro_batch_size=2, num_learners=n, num_cpus=0.25,
                      torch_threads=1, collective_timeout_s=60, publish_bucket_mb=0.01, **trainer)
    return LearnerSpec(policy, t, DTYPE, "cpu", 0, ActorResources(0.25))


def make_batch(seed, n=7, vocab=250):
    rng = np.random.default_rng(seed)
    ids, masks, old, adv = [], [], [], []
    for _ in range(n):
        length = int(rng.integers(6, 40))  # uneven: the shares differ in count and tokens
        prompt = int(rng.integers(2, length - 2))
        ids.append(rng.integers(3, vocab, length).tolist())
        masks.append([0] * prompt + [1] * (length - prompt))
        old.append([0.0] * prompt + (-rng.random(length - prompt) * 3).tolist())
        adv.append(float(rng.normal()))
    return TrainBatch(ids, masks, old, adv)


def demos(seed, n=9):
    b = make_batch(seed, n)
    return [{"token_ids": t, "loss_mask": m} for t, m in zip(b.token_ids, b.loss_masks)]


def published(store):
    version, weights = pull_if_newer(store, -1)
    return version, {k: np.array(v) for k, v in weights.items()}


def assert_close(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        diff = float(np.linalg.norm(a[k] - b[k]))
        assert diff <= RTOL * max(1e-12, float(np.linalg.norm(a[k]))), f"{what}: {k} differs by {diff:.3g}"


def assert_stats_close(one, two):
    for k in ("loss", "kl", "clip_fraction", "ratio_mean", "grad_norm", "optimizer_steps"):
        assert two[k] == pytest.approx(one[k], rel=RTOL, abs=1e-9), k


@pytest.fixture(scope="module")
def pair(policy):
    """One learner (and its reference-model actor) and a group of two, on the same policy; the group
    recomputes activations in its backward pass (gradient checkpointing) and packs its micro-batches
    into rows of 48 tokens (several per rank, in lockstep) where the one learner pads them, which
    changes no number."""
    stores = [start_weight_store(), start_weight_store()]
    one = start_learner(spec(policy, 1, max_tokens_per_micro_batch=0), stores[0])
    two = start_learner(spec(policy, 2, gradient_checkpointing=True, max_tokens_per_micro_batch=48), stores[1])
    ref_one = start_reference(ReferenceSpec(policy, DTYPE, "cpu", 1, 2, ActorResources(0.25)))
    ray.get(two.load_reference.remote(policy))
    return one, two, ref_one, stores


def test_two_ranks_take_the_single_learners_warm_start_and_grpo_step(pair, policy, tmp_path):
    one, two, ref_one, stores = pair
    d = demos(1)
    losses = ray.get([one.warm_start.remote(d, 2, 4, 1e-3, 0), two.warm_start.remote(d, 2, 4, 1e-3, 0)])
    assert losses[1] == pytest.approx(losses[0], rel=RTOL)
    ray.get([one.publish.remote(), two.publish.remote()])
    assert_close(published(stores[0])[1], published(stores[1])[1], "after the warm start")

    batch = make_batch(2)
    refs = ray.get([ref_one.logprobs.remote(batch, 0.7), two.logprobs.remote(batch, 0.7)])
    assert [len(r) for r in refs[1]] == [len(t) for t in batch.token_ids]
    np.testing.assert_allclose(np.concatenate(refs[1]), np.concatenate(refs[0]), rtol=1e-5, atol=1e-6)
    stats = ray.get([one.train_step.remote(batch, refs[0], 0.7), two.train_step.remote(batch, refs[0], 0.7)])
    assert stats[0]["version"] == stats[1]["version"] == 1.0
    assert_stats_close(*stats)
    v1, w1 = published(stores[0])
    v2, w2 = published(stores[1])
    assert v1 == v2 == 1
    assert_close(w1, w2, "after one GRPO step")

    # The weights a rollout worker loads are the learner's full state: the DCP shards read back whole.
    path = str(tmp_path / "ckpt")
    ray.get(two.save.remote(path))
    model, _ = load_policy(policy, DTYPE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_sharded(model, opt, os.path.join(path, "dcp"))
    engine = HFEngine(load_policy(policy)[0], pad_token_id=0)
    engine.load_weights(w2)
    loaded = {k: v.numpy() for k, v in engine.model.state_dict().items()}
    assert_close({k: loaded[k] for k in w2}, {k: model.state_dict()[k].numpy() for k in w2}, "rollout worker vs DCP state")
    # ... and the Hugging Face folder reloads with from_pretrained as the same weights.
    hf, _ = load_policy(os.path.join(path, "policy"))
    assert_close({k: v.numpy() for k, v in hf.state_dict().items() if k in w2}, w2, "HF folder vs published")


def test_checkpoints_resume_at_another_number_of_ranks(pair, policy, tmp_path):
    one, two, _, stores = pair
    batch = make_batch(3)
    # Two ranks -> one: the resumed learner's next step is the uninterrupted group's.
    ray.get(two.save.remote(str(tmp_path / "two")))
    after_two = ray.get(two.train_step.remote(batch, None, 1.0))
    resumed_store = start_weight_store()
    resumed = start_learner(spec(policy, 1), resumed_store)
    assert ray.get(resumed.restore.remote(str(tmp_path / "two"))) == after_two["version"] - 1
    after_one = ray.get(resumed.train_step.remote(batch, None, 1.0))
    assert after_one["version"] == after_two["version"]
    assert_stats_close(after_one, after_two)
    assert_close(published(resumed_store)[1], published(stores[1])[1], "resumed at N=1 vs uninterrupted N=2")
    ray.kill(resumed)
    # One -> two: a new group (its shards offloaded to host memory, a no-op on CPU that still takes
    # the offload path) restores the single learner's policy-only checkpoint (as the warm start
    # writes), then its whole checkpoint, and takes its next step.
    ray.get(one.save.remote(str(tmp_path / "one-policy"), False))
    ray.get(one.save.remote(str(tmp_path / "one")))
    group_store = start_weight_store()
    group = start_learner(spec(policy, 2, cpu_offload=True), group_store)
    assert ray.get(group.restore.remote(str(tmp_path / "one-policy"))) == 0
    assert_close(published(group_store)[1], published(stores[0])[1], "policy-only checkpoint read by two ranks")
    ray.get(group.restore.remote(str(tmp_path / "one")))
    stats = ray.get([one.train_step.remote(batch, None, 1.0), group.train_step.remote(batch, None, 1.0)])
    assert_stats_close(*stats)
    assert_close(published(stores[0])[1], published(group_store)[1], "resumed at N=2 vs uninterrupted N=1")
    stop_learner(group, group=True)


def test_a_killed_rank_fails_the_group_with_a_line_naming_it(policy):
    group = start_learner(spec(policy, 2), start_weight_store())
    pids = ray.get(group.rank_pids.remote())
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(LearnerLost, match=r"learner rank 1 of 2 died during train_step"):
        ray.get(group.train_step.remote(make_batch(4), None, 1.0))
    assert time.monotonic() - t0 < 30  # not the collective time-out: the group noticed the death
    with pytest.raises(LearnerLost, match="rank 1 of 2"):
        ray.get(group.publish.remote())
    assert gone(pids[0], within_s=20)  # the surviving rank was stopped, not left waiting in a collective


def gone(pid, within_s):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
