"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) fed with a run's figures."""
