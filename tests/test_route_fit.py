"""Routes fitted to question features (orchestra_ray/reports/route_fit.py): a route that pays only
on questions of one kind is picked for held-out questions of that kind; the ridge weight is the
cross-validated one; mismatched shapes are refused (no Ray)."""

import numpy as np
import pytest

from orchestra_ray.reports.route_fit import ALPHAS, cross_validated_alpha, fitted_routes


def kinds(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    return x, x[:, 0] > 0  # the kind is the sign of one feature


def test_the_route_that_pays_on_a_kind_is_picked_for_that_kind():
    x, kind = kinds(300, 0)
    # route 0 pays 1 on one kind, route 1 on the other, route 2 a little on both
    rewards = np.stack([kind * 1.0, ~kind * 1.0, np.full(len(x), 0.3)], axis=1)
    rewards += np.random.default_rng(1).normal(scale=0.2, size=rewards.shape)
    held, held_kind = kinds(100, 2)
    picks = np.array(fitted_routes(x, rewards, held))
    assert ((picks == 0) == held_kind).mean() > 0.9 and (picks == 2).mean() < 0.1


def test_features_that_say_nothing_leave_the_best_route_on_average():
    x = np.random.default_rng(3).normal(size=(200, 8))
    rewards = np.stack([np.full(200, 0.5), np.full(200, 0.4)], axis=1) + np.random.default_rng(4).normal(scale=0.3, size=(200, 2))
    assert cross_validated_alpha(x, rewards) in ALPHAS
    assert np.mean(np.array(fitted_routes(x, rewards, np.random.default_rng(5).normal(size=(50, 8)))) == 0) > 0.8


def test_one_training_question_is_enough_to_pick():
    assert fitted_routes(np.ones((1, 3)), np.array([[0.2, 0.9]]), np.zeros((2, 3))) == [1, 1]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        fitted_routes(np.zeros((10, 4)), np.zeros((9, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="do not match"):
        fitted_routes(np.zeros((10, 4)), np.zeros((10, 2)), np.zeros((3, 5)))
