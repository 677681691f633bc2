"""Experiment trackers that fail: one warning line each, and the run's figures go on to the others.
(What they record in a real run is checked in test_e2e_grpo.py, with each tracker's own reader.)"""

import json
import os
import time

import pytest

from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError
from orchestra_ray.tracking.backends import open_trackers
from orchestra_ray.tracking.flatten import flatten_metrics
from orchestra_ray.tracking.settings import LoggingConfig, MLflowConfig
from orchestra_ray.tracking.tracker import Tracker, Trackers
from tests.ports import free_port


def test_a_tracker_server_that_is_down_is_one_warning_and_the_others_go_on(tmp_path):
    warnings = []
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = LoggingConfig(backends=["console", "mlflow", "tensorboard"], mlflow=MLflowConfig(tracking_uri=down))
    t0 = time.time()
    trackers = open_trackers(cfg, str(tmp_path), str(tmp_path), warnings.append)
    assert time.time() - t0 < 60  # not MLflow's default minutes of retries
    assert trackers.names == ["tensorboard"]
    assert len(warnings) == 1 and "mlflow tracker could not start" in warnings[0] and "the run goes on" in warnings[0]
    trackers.log_metrics({"reward": 0.5}, 1)
    trackers.close()
    assert json.load(open(tmp_path / "trackers.json")) == {"tensorboard": {"dir": str(tmp_path / "tensorboard")}}


class Broken(Tracker):
    name = "broken"

    def __init__(self):
        self.calls = 0

    def log_metrics(self, metrics, step):
        self.calls += 1
        raise ConnectionError("server went away\nsecond line of a long trace")


class Kept(Tracker):
    name = "kept"

    def __init__(self):
        self.steps = []

    def log_metrics(self, metrics, step):
        self.steps.append(step)


def test_a_tracker_failing_mid_run_is_dropped_after_one_warning(tmp_path):
    warnings, broken, kept = [], Broken(), Kept()
    trackers = Trackers([broken, kept], warnings.append, str(tmp_path))
    for step in (1, 2, 3):
        trackers.log_metrics({"reward": 0.1 * step}, step)
    assert broken.calls == 1 and kept.steps == [1, 2, 3]
    assert len(warnings) == 1 and "broken tracker: logging step 1 failed (ConnectionError: server went away)" in warnings[0]


def test_nested_metrics_become_slash_names_and_non_numbers_are_left_out():
    flat = flatten_metrics({"reward": 0.25, "updated": True, "weight_version_used": [0, 1], "note": "x",
                            "families": {"frames": {"accuracy": 0.5}}, "bad": float("nan"),
                            "cost_by_profile": {"cost-first": 0.001, "domain:retail": 2}})
    assert flat == {"reward": 0.25, "updated": 1.0, "families/frames/accuracy": 0.5,
                    "cost_by_profile/cost-first": 0.001, "cost_by_profile/domain_retail": 2.0}


@pytest.mark.parametrize("override, key", [("logging.backends=[console,neptune]", "logging.backends"),
                                           ("logging.backends=[wandb,wandb]", "logging.backends"),
                                           ("logging.wandb.mode=sometimes", "logging.wandb.mode")])
def test_a_bad_logging_config_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(os.path.join("pipelines", "configs", "quickstart.yaml"), [override])
