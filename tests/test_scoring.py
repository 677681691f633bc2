"""The score stage without Ray: rewards and advantages per group, every filter's exact count on
small hand-built groups (a sample dropped by an earlier filter still counts for the reward-side
flags, but not for the infrastructure and staleness filters), and the ledger's check."""

import pickle

import pytest

from orchestra_ray.grpo.advantages import grouped_advantages
from orchestra_ray.grpo.ledger import StepLedger
from orchestra_ray.config import RewardConfig
from orchestra_ray.grpo.scoring import FilterCounts, score
from orchestra_ray.grpo.staleness import StalenessError
from orchestra_ray.rollout.failures import DATA, INFRASTRUCTURE
from orchestra_ray.rollout.sample import Sample, TrainBatch
from orchestra_ray.rollout.trajectory import TRAJECTORY_SCHEMA, trajectory_rows


def sample(task, k, outcome=1.0, cost=0.0, fmt=False, answer=True, infra=False, version=0):
    calls = [{"name": "call_expert", "error_kind": INFRASTRUCTURE if infra else ""}]
    return Sample(task_id=task, question_id=task, sample=k, episode_id=f"{task}#{k}", weight_version=version,
                  preference={"outcome": 0.5, "cost": 0.5}, metrics={"outcome": outcome, "cost": cost},
                  format_errors=["no_tool_call"] if fmt else [], answer_source="text" if answer else "",
                  tool_calls=calls, token_ids=[1, 2, 3 + k], loss_mask=[0, 1, 1], rollout_logprobs=[0.0, -0.5, -0.25])


def books(samples, step=1):
    ledger = StepLedger(step)
    ledger.issue(s.episode_id for s in samples)
    ledger.complete(s.episode_id for s in samples)
    return ledger


def scored(samples, learner_version=0, max_staleness=0, **reward):
    return score(samples, books(samples), learner_version, RewardConfig(**reward), max_staleness)


def counts(**nonzero):
    return {**FilterCounts().as_dict(), **nonzero}


def test_rewards_and_advantages_are_per_group_over_every_sample():
    # Group a: both right (a constant outcome adds nothing), the cheaper better; group b: one right.
    out = scored([sample("a", 0, cost=0.1), sample("a", 1, cost=0.3), sample("b", 0), sample("b", 1, outcome=0.0)])
    assert [s.reward for s in out.samples] == [0.5, 0.0, 0.5, 0.0]
    assert [s.advantage for s in out.samples] == grouped_advantages([0.5, 0.0]) * 2
    assert all(s.kept for s in out.samples) and out.kept == out.samples
    assert out.counts.as_dict() == counts(kept_samples=4, total_samples=4)


def test_zero_variance_counts_every_group_and_sample_filtered_or_not():
    group = [sample("a", 0), sample("a", 1), sample("b", 0), sample("b", 1, outcome=0.0)]
    on = scored(group)
    assert [s.zero_variance for s in on.samples] == [True, True, False, False]
    assert [s.kept for s in on.samples] == [False, False, True, True]
    assert on.counts.as_dict() == counts(zero_variance_groups=1, zero_variance_samples=2, kept_samples=2, total_samples=4)
    off = scored([sample("a", 0), sample("a", 1), sample("b", 0), sample("b", 1, outcome=0.0)], filter_zero_variance=False)
    assert all(s.kept for s in off.samples)
    assert off.counts.as_dict() == counts(zero_variance_groups=1, zero_variance_samples=2, kept_samples=4, total_samples=4)


@pytest.mark.parametrize("enforce", [False, True])
def test_format_errors_and_missing_answers_count_whatever_dropped_the_sample(enforce):
    group = [sample("a", 0, fmt=True), sample("a", 1, answer=False),  # zero variance: dropped anyway
             sample("b", 0, fmt=True, answer=False), sample("b", 1, outcome=0.0)]
    out = scored(group, filter_format_errors=enforce, filter_no_answer=enforce)
    assert [s.has_format_error for s in out.samples] == [True, False, True, False]
    assert [s.no_answer for s in out.samples] == [False, True, True, False]
    assert [s.kept for s in out.samples] == [False, False, not enforce, True]
    assert out.counts.as_dict() == counts(zero_variance_groups=1, zero_variance_samples=2, format_error_samples=2,
                                          no_answer_samples=2, kept_samples=1 + (not enforce), total_samples=4)


def test_infrastructure_failures_count_only_samples_still_kept():
    group = [sample("a", 0, infra=True), sample("a", 1),  # zero variance: dropped before the tool filter
             sample("b", 0, infra=True), sample("b", 1, outcome=0.0, fmt=True, infra=True), sample("b", 2, outcome=0.0)]
    out = scored(group, filter_format_errors=True)
    assert [s.kept for s in out.samples] == [False, False, False, False, True]
    assert out.counts.as_dict() == counts(zero_variance_groups=1, zero_variance_samples=2, format_error_samples=1,
                                          infrastructure_failure_samples=1, kept_samples=1, total_samples=5)
    # A data failure is the policy's doing: trained on.
    data = [sample("b", 0), sample("b", 1, outcome=0.0)]
    data[0].tool_calls[0]["error_kind"] = DATA
    assert scored(data).counts.as_dict() == counts(kept_samples=2, total_samples=2)


def test_stale_samples_are_stamped_and_count_only_when_still_kept():
    group = [sample("a", 0, version=3), sample("a", 1, outcome=0.0, version=2), sample("a", 2, version=1),
             sample("a", 3, outcome=0.0, version=0, infra=True)]
    out = scored(group, learner_version=3, max_staleness=1)
    assert [(s.learner_version, s.staleness) for s in out.samples] == [(3, 0), (3, 1), (3, 2), (3, 3)]
    assert [s.kept for s in out.samples] == [True, True, False, False]
    assert out.counts.as_dict() == counts(infrastructure_failure_samples=1, stale_samples=1, kept_samples=2, total_samples=4)
    assert out.batch() == TrainBatch.of(out.samples[:2])


def test_a_sample_newer_than_the_learner_or_a_negative_bound_is_refused():
    with pytest.raises(StalenessError, match="newer than the learner's"):
        scored([sample("a", 0, version=2), sample("a", 1, version=1)], learner_version=1, max_staleness=1)
    with pytest.raises(ValueError, match="max_staleness must not be negative"):
        scored([sample("a", 0), sample("a", 1)], max_staleness=-1)


def test_the_train_batch_holds_the_kept_samples_in_order_and_nothing_else():
    out = scored([sample("a", 0), sample("a", 1), sample("b", 0), sample("b", 1, outcome=0.0), sample("c", 0, outcome=0.0),
                  sample("c", 1)])
    kept = [s for s in out.samples if s.kept]
    assert [s.episode_id for s in kept] == ["b#0", "b#1", "c#0", "c#1"]
    batch = out.batch()
    assert len(batch) == 4
    assert batch.token_ids == [s.token_ids for s in kept] and batch.loss_masks == [s.loss_mask for s in kept]
    assert batch.rollout_logprobs == [s.rollout_logprobs for s in kept]
    assert batch.advantages == [s.advantage for s in kept]
    assert set(vars(TrainBatch)["__dataclass_fields__"]) == {"token_ids", "loss_masks", "rollout_logprobs", "advantages"}


def test_the_ledger_check_refuses_samples_that_are_not_its_completed_episodes():
    group = [sample("a", 0), sample("a", 1, outcome=0.0)]
    assert scored(group).books == {"issued": 2, "completed": 2, "failed_attempts": 0, "reissued": 0,
                                   "duplicates_discarded": 0, "failures": {}}
    reward = RewardConfig()
    unfinished = StepLedger(1)
    unfinished.issue(["a#0", "a#1"])
    unfinished.complete(["a#0"])
    with pytest.raises(ValueError, match="1 issued episodes never completed"):
        score(group[:1], unfinished, 0, reward)
    with pytest.raises(ValueError, match="0 twice, 0 never completed, 1 completed but missing"):
        score(group[:1], books(group), 0, reward)
    with pytest.raises(ValueError, match="1 twice"):
        score(group + group[:1], books(group), 0, reward)
    with pytest.raises(ValueError, match="1 never completed"):
        score(group + [sample("b", 0)], books(group), 0, reward)


def test_a_sample_row_has_every_trajectory_column_and_pickles_small():
    s = scored([sample("a", 0), sample("a", 1, outcome=0.0)]).samples[0]
    assert set(s.row()) | {"run_id", "step"} == set(TRAJECTORY_SCHEMA.names)
    row = trajectory_rows("run", 7, [s]).to_pylist()[0]
    assert (row["run_id"], row["step"], row["episode_id"], row["reward"], row["kept"]) == ("run", 7, "a#0", 0.5, True)
    assert dict(row["metrics"]) == s.metrics
    # Through Ray a sample costs what a dict of its fields costs, and comes back equal.
    assert pickle.loads(pickle.dumps(s)) == s
    assert len(pickle.dumps(s)) < 1.1 * len(pickle.dumps({name: getattr(s, name) for name in s.__slots__}))
