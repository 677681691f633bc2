"""The collective weight transport on a real local Ray cluster: a learner broadcasts each version over
a gloo group to rollout-worker ends (the bench's sync targets: the transport's receiver, the worker's
pull and the transformers engine's load), which load it byte-equal to the learner's; a worker that
replaces another gets the current version at once and joins the next broadcast; a broadcast to a
worker that died falls back to the object store, and the next version is broadcast again. Both ways
to a worker on the learner's node: by shared memory (the default) and over the group itself."""

import subprocess
import sys
import time

import numpy as np
import pytest
import ray

from actors.common import ActorResources
from actors.learner import LearnerSpec
from actors.learner_group import start_learner
from actors.node_segment import NodeSegment, SegmentUnreadable
from actors.weight_transport import start_weight_store, unpack_state
from orchestra_ray.config import TrainerConfig, WeightsConfig
from pipelines.bench.weight_sync_actors import SyncTarget
from tests.test_learner_group import make_batch

TIMEOUT_S = 20.0


@pytest.fixture(scope="module", params=[True, False], ids=["shared_memory", "gloo"])
def setup(request, local_ray, uneven_policy):
    from transformers import AutoConfig

    store = start_weight_store()
    t = TrainerConfig(lr=1e-2, kl_coef=0.0, micro_batch_size=4, num_cpus=0.25, torch_threads=1)
    spec = LearnerSpec(uneven_policy, t, "float32", "cpu", 0, ActorResources(0.25),
                       WeightsConfig(transport="collective", bucket_mb=0.01, timeout_s=TIMEOUT_S,
                                               shared_memory=request.param))
    learner = start_learner(spec, store)
    config = AutoConfig.from_pretrained(uneven_policy).to_dict()
    yield store, learner, config, request.param
    ray.kill(learner)


def worker(config, store):
    return SyncTarget.options(num_cpus=0).remote(config, store, True, 1, collective=True)


def learners_weights(learner):
    version, refs = ray.get(learner.current_weights.remote())
    return version, {k: np.array(v) for k, v in unpack_state(ray.get(refs[0])).items()}


def assert_delivered(learner, workers, version):
    got_version, expected = learners_weights(learner)
    assert got_version == version
    for w in workers:
        assert ray.get(w.sync.remote())["version"] == version
        state = ray.get(w.state.remote())
        for name, array in expected.items():
            assert state[name].tobytes() == array.tobytes(), f"{name} of version {version} differs"


def test_versions_arrive_byte_equal_through_a_worker_replacement_and_a_death(setup):
    store, learner, config, shared_memory = setup
    a, b = worker(config, store), worker(config, store)
    ray.get([a.ready.remote(), b.ready.remote()])
    assert ray.get(learner.publish.remote()) == 0
    version, refs, source = ray.get(store.latest.remote())
    assert (version, refs) == (0, []) and source is not None, "version 0 went by broadcast, not the object store"
    assert_delivered(learner, [a, b], 0)
    assert ray.get(a.weights_path.remote()) == ("shared_memory" if shared_memory else "group")

    ray.get(learner.train_step.remote(make_batch(0), None, 1.0))
    assert ray.get(store.latest.remote())[1] == []
    assert_delivered(learner, [a, b], 1)

    # b is replaced, as the rollout pool does: killed, told to the store, a new worker joins.
    ray.kill(b, no_restart=True)
    ray.get(store.leave_transport.remote([b]))
    c = worker(config, store)
    ray.get(c.ready.remote())
    assert_delivered(learner, [c], 1)  # the current version at once, from the learner (object store)
    ray.get(learner.train_step.remote(make_batch(1), None, 1.0))
    assert ray.get(store.latest.remote())[1] == [], "the new group (a, c) received version 2 by broadcast"
    assert_delivered(learner, [a, c], 2)

    # c dies unannounced: the next broadcast fails, that version goes through the object store.
    ray.kill(c, no_restart=True)
    t0 = time.monotonic()
    ray.get(learner.train_step.remote(make_batch(2), None, 1.0))
    print(f"failed-broadcast step: {time.monotonic() - t0:.1f} s")
    assert time.monotonic() - t0 < 2 * TIMEOUT_S + 10, "a failed broadcast never hangs"
    version, refs, _ = ray.get(store.latest.remote())
    assert version == 3 and len(refs) == 1, "version 3 fell back to the object store"
    assert_delivered(learner, [a], 3)
    # ... and the group is formed again without c: version 4 is broadcast.
    ray.get(learner.train_step.remote(make_batch(3), None, 1.0))
    assert ray.get(store.latest.remote())[1] == []
    assert_delivered(learner, [a], 4)


def test_a_node_segment_is_read_by_another_process_and_leaves_nothing_behind():
    segment = NodeSegment.create(1 << 20)
    segment.array[:] = np.arange(1 << 20, dtype=np.uint64).astype(np.uint8)
    code = ("import sys; from actors.node_segment import NodeSegment; "
            "print(int(NodeSegment.open(sys.argv[1]).array.astype('uint64').sum()))")
    out = subprocess.run([sys.executable, "-c", code, segment.name], capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(segment.array.astype(np.uint64).sum())
    name = segment.name
    segment.close()
    with pytest.raises(SegmentUnreadable):  # its descriptor is closed (or reused by another file)
        NodeSegment.open(name)
