"""How the ranks of a learner group split a batch (plain lists, no torch)."""

import pytest

from orchestra_ray.grpo.shares import rank_micro_batches, token_balanced_shares


def test_shares_balance_tokens_and_cover_every_sample_once():
    lengths = [50, 10, 40, 30, 20, 5, 45]
    shares = token_balanced_shares(lengths, 2)
    assert sorted(i for s in shares for i in s) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= max(lengths)  # longest-first greedy: within one sequence
    assert loads == [100, 100]
    assert all(s == sorted(s) for s in shares)  # the batch's order within a share
    assert token_balanced_shares(lengths, 1) == [list(range(len(lengths)))]
    assert token_balanced_shares([3], 3) == [[0], [], []]
    with pytest.raises(ValueError, match="world size"):
        token_balanced_shares(lengths, 0)


def test_every_rank_runs_as_many_micro_batches_as_the_busiest():
    rows, lengths = [7, 3, 9, 1, 4], [100, 10, 10, 10, 10]
    plans = [rank_micro_batches(rows, lengths, 2, r, 2) for r in range(2)]
    assert plans[0] == [[7]] + [[]]  # the long sequence alone, then an empty (zero-weight) pass
    assert plans[1] == [[3, 9], [1, 4]]
    assert len(plans[0]) == len(plans[1])
    # one rank: the rows in order, in chunks, as a single learner takes them
    assert rank_micro_batches(rows, lengths, 2, 0, 1) == [[7, 3], [9, 1], [4]]
