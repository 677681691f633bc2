"""Opens the trackers `logging.backends` names for one run directory; one that cannot start is a
warning line, and the run goes on without it."""

from __future__ import annotations

import os
from typing import Callable, List, Optional

from orchestra_ray.tracking.settings import LoggingConfig
from orchestra_ray.tracking.tracker import Tracker, Trackers, first_line, resumed_state


def default_mlflow_uri(run_root: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(run_root), "mlflow.db")


def open_trackers(cfg: LoggingConfig, run_dir: str, run_root: str, warn: Callable[[str], None], resume: bool = False,
                  resume_step: Optional[int] = None) -> Trackers:
    """`resume`: continue the trackers' runs of an earlier start of `run_dir` (their ids are kept in
    its trackers.json); `resume_step`: the step training goes on from (TensorBoard hides later ones)."""
    run_dir = os.path.abspath(run_dir)
    name = os.path.basename(run_dir)
    opened: List[Tracker] = []
    for backend in cfg.backends:
        try:
            if backend == "tensorboard":
                from orchestra_ray.tracking.tensorboard_tracker import TensorBoardTracker

                opened.append(TensorBoardTracker(cfg.tensorboard.dir or os.path.join(run_dir, "tensorboard"),
                                                 resume_step if resume else None))
            elif backend == "mlflow":
                from orchestra_ray.tracking.mlflow_tracker import MLflowTracker

                uri = cfg.mlflow.tracking_uri or default_mlflow_uri(run_root)
                local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
                artifacts = os.path.join(os.path.abspath(run_root), "mlartifacts") if local else None
                opened.append(MLflowTracker(uri, cfg.mlflow.experiment, name, run_dir, artifacts,
                                            resumed_state(run_dir, "mlflow", resume)))
            elif backend == "wandb":
                from orchestra_ray.tracking.wandb_tracker import WandbTracker

                opened.append(WandbTracker(cfg.wandb, name, run_dir, resumed_state(run_dir, "wandb", resume), warn))
        except Exception as exc:  # a missing package, a bad URI, a server down: never the run's end
            hint = " (pip install 'orchestra-ray[trackers]')" if isinstance(exc, ImportError) else ""
            warn(f"warning: {backend} tracker could not start ({type(exc).__name__}: {first_line(exc)}){hint}; "
                 "the run goes on without it")
    return Trackers(opened, warn, run_dir)
