"""Routes chosen per question from its features: for every candidate route, a ridge regression
from the question's features (a sentence embedding) to the reward that route earned on each
training question; a held-out question takes the route with the highest predicted reward. The
ridge weight is chosen by k-fold cross-validation on the training questions (the mean reward of
the routes it picks there). What a router that reads the question, and nothing else, can learn
from the training split: `orchestra-ray bench routes` sets it beside the fixed cascade.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _fit(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights (features + bias) x -> every column of y; the bias is not penalised."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(xb.T @ xb + penalty, xb.T @ y)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))]) @ w


def cross_validated_alpha(x: np.ndarray, rewards: np.ndarray, alphas: Sequence[float] = ALPHAS, folds: int = 5) -> float:
    """The ridge weight whose picks earn the most reward on held-out folds of the training questions."""
    fold = np.arange(len(x)) % folds
    best, best_value = alphas[0], -np.inf
    for alpha in alphas:
        value = 0.0
        for k in range(folds):
            train, test = fold != k, fold == k
            picks = _predict(_fit(x[train], rewards[train], alpha), x[test]).argmax(axis=1)
            value += rewards[test][np.arange(test.sum()), picks].sum()
        if value > best_value:
            best, best_value = alpha, value
    return best


def fitted_routes(x_train: np.ndarray, rewards: np.ndarray, x_heldout: np.ndarray, folds: int = 5) -> List[int]:
    """Per held-out question, the index of the route (a column of `rewards`, [questions, routes])
    with the highest reward predicted from its features."""
    x_train, x_heldout = np.asarray(x_train, dtype=np.float64), np.asarray(x_heldout, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (len(x_train), rewards.shape[1]) or x_train.shape[1] != x_heldout.shape[1]:
        raise ValueError(f"features {x_train.shape} / {x_heldout.shape} do not match rewards {rewards.shape}")
    alpha = cross_validated_alpha(x_train, rewards, folds=min(folds, len(x_train))) if len(x_train) > 1 else ALPHAS[0]
    return [int(i) for i in _predict(_fit(x_train, rewards, alpha), x_heldout).argmax(axis=1)]
