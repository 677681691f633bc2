"""What a rollout pool says when its workers wait to be placed, on a real local cluster: a resource
no node has needs an autoscaler; busy nodes only need time."""

import pytest
import ray

from actors.rollout_pool import RolloutPool


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=1, resources={"rollout": 1}, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_resource_no_node_has_is_named_with_the_autoscaler(cluster):
    reason = RolloutPool(lambda i: None, 0, resources={"gpu_rollout": 1, "rollout": 1})._pending_reason()
    assert reason.startswith("no node has gpu_rollout;") and "autoscaler adds such a node" in reason


def test_busy_nodes_are_not_blamed_on_a_missing_autoscaler(cluster):
    assert RolloutPool(lambda i: None, 0, resources={"rollout": 1})._pending_reason().startswith("the nodes are busy;")
    assert "CPUs free up" in RolloutPool(lambda i: None, 0)._pending_reason()
