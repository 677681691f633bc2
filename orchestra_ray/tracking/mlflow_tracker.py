"""MLflow: one run per run directory, through MLflow's own client (a local SQLite store by default,
a tracking server when one is named)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional

import yaml

from orchestra_ray.tracking.flatten import flatten_params
from orchestra_ray.tracking.tracker import Tracker

_MAX_PARAMS, _MAX_METRICS, _MAX_PARAM_CHARS = 100, 1000, 6000  # MLflow's limits per log_batch call


class MLflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, run_dir: str,
                 artifact_root: Optional[str], resumed: Optional[Dict]):
        # MLflow retries a server that is down for minutes by default; a run should not wait that long
        # on its tracker (the user's own settings win).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        if resumed and resumed.get("run_id") and resumed.get("tracking_uri") == tracking_uri:
            self.run_id = resumed["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location=artifact_root)
            run = self.client.create_run(exp_id, run_name=run_name, tags={"orchestra_ray.run_dir": run_dir})
            self.run_id = run.info.run_id

    def log_config(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params  # MLflow refuses to change a logged parameter
        new = [Param(k, v[:_MAX_PARAM_CHARS]) for k, v in flatten_params(config).items() if k not in have]
        for i in range(0, len(new), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=new[i:i + _MAX_PARAMS])
        self.client.log_text(self.run_id, yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=batch[i:i + _MAX_METRICS])

    def log_image(self, name: str, path: str, step: int) -> None:
        self.client.log_artifact(self.run_id, path, "plots")

    def log_artifact(self, path: str, folder: str) -> None:
        self.client.log_artifact(self.run_id, path, folder)

    def state(self) -> Dict:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
