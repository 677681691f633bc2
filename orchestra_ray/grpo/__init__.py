"""GRPO's maths: the orchestration reward, grouped advantages, the scoring of a step, the loss and
the policy update, weight-version staleness and the episode ledger. Plain data and tensors, no Ray."""
