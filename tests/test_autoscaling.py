"""Rollout workers that scale with load, under Ray's real autoscaler: rollout workers ask for a
custom `rollout` resource that the head has once and each fake node has once. Training steps run
while the queue of groups is small (one worker), large (the pool asks for more workers, the
autoscaler adds nodes for them) and small again (idle workers are released, the autoscaler removes
their nodes), and every step completes with the pool as it is at that moment."""

import time

import pytest
import ray

from orchestra_ray.config_load import load_config
from pipelines.cluster import connect
from pipelines.families import load_families
from pipelines.progress import Progress
from pipelines.train import Trainer, new_run_dir
from pipelines.zoo import load_zoo

from fake_cluster import FakeAutoscalingCluster
from test_e2e_grpo import overrides

GROUPS_PER_WORKER, MAX_WORKERS = 2, 3


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, frames_dir):
    work = tmp_path_factory.mktemp("fake")
    cluster = FakeAutoscalingCluster(str(work), head_cpus=2, head_resources={"rollout": 1},
                                     node_resources={"CPU": 1, "rollout": 1}, max_nodes=MAX_WORKERS - 1,
                                     idle_timeout_minutes=0.1)
    root, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("cache")
    args = overrides(frames_dir, root, cache) + [
        "run.name=autoscale", "policy.tiny.pretrain_steps=20", "trainer.kl_coef=0",
        "rollout.num_workers=1", "rollout.resources.rollout=1", "rollout.group_size=2", "rollout.tasks_per_step=2",
        "rollout.autoscale.enabled=true", "rollout.autoscale.min_workers=1",
        f"rollout.autoscale.max_workers={MAX_WORKERS}", f"rollout.autoscale.groups_per_worker={GROUPS_PER_WORKER}",
        "rollout.autoscale.idle_timeout_s=3",
    ]
    cfg = load_config("pipelines/configs/quickstart.yaml", args)
    zoo = load_zoo(cfg)
    cluster.start()
    try:
        connect(cfg, cluster.address)
        tr = Trainer(cfg, zoo, new_run_dir(cfg, "quickstart"), Progress(), load_families(cfg, zoo))
        tr.workers.start(tr.policy_path())
        ray.get(tr.learner.publish.remote())
        yield tr, cluster
    finally:
        ray.shutdown()
        cluster.stop()


def steps_until(tr, tasks_per_step, done, limit_s, min_steps=1):
    """Runs GRPO steps at this load until `done()` holds (after at least min_steps); returns them."""
    tr.cfg.rollout.tasks_per_step = tasks_per_step
    deadline, out = time.time() + limit_s, []
    while True:
        out.append(tr.grpo_step())
        if len(out) >= min_steps and done():
            return out
        assert time.time() < deadline, f"not reached in {limit_s}s: pool {tr.pool.size()}, steps {len(out)}"


def test_nodes_added_under_load_and_removed_when_idle(trainer):
    tr, cluster = trainer
    assert cluster.alive_nodes() == 1

    before = steps_until(tr, 2, lambda: True, 120)
    assert [m["rollout_workers"] for m in before] == [1]

    # Six groups ask for three workers: two wait for a `rollout` node until the autoscaler adds it.
    during = steps_until(tr, 6, lambda: tr.pool.size()["ready"] == MAX_WORKERS, 240, min_steps=2)
    assert cluster.alive_nodes() == MAX_WORKERS
    assert during[0]["rollout_workers"] < MAX_WORKERS <= during[-1]["rollout_workers"]

    # Back to two groups: the extra workers idle past their timeout are released, then the
    # autoscaler removes nodes they leave idle (all of them, given time; the test waits for one).
    after = steps_until(tr, 2, lambda: cluster.alive_nodes() < MAX_WORKERS, 240, min_steps=2)
    assert tr.pool.size() == {"ready": 1, "pending": 0}
    assert tr.pool.counts["released"] == MAX_WORKERS - 1  # no churn: none released while the queue needed it

    steps = before + during + after
    assert [m["step"] for m in steps] == list(range(1, len(steps) + 1))
    for m in steps:
        assert m["weight_version_used"] and m["updated"], m
