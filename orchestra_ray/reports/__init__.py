"""Held-out evaluation, routing baselines and the evaluation report."""
