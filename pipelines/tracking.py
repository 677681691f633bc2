"""What a run sends its experiment trackers (logging.backends): the resolved config, every step's
metrics line, the held-out evaluations, and the plots of the run and of its reports."""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

from omegaconf import OmegaConf

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.reports.plots import training_curves_plot
from orchestra_ray.tracking.backends import default_mlflow_uri, open_trackers
from orchestra_ray.tracking.flatten import flatten_metrics, metric_name
from orchestra_ray.tracking.tracker import Trackers
from pipelines.report import read_metrics


def start_trackers(cfg: OrchestraConfig, run_dir: str, note: Callable[[str], None], resume: bool = False,
                   resume_step: Optional[int] = None, with_config: bool = True) -> Trackers:
    trackers = open_trackers(cfg.logging, run_dir, cfg.run.root, note, resume, resume_step)
    if with_config:
        trackers.log_config(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    for name in trackers.names:
        note(f"{name}: {where_to_look(cfg, run_dir, name)}")
    return trackers


def where_to_look(cfg: OrchestraConfig, run_dir: str, backend: str) -> str:
    log = cfg.logging
    if backend == "tensorboard":
        return f"tensorboard --logdir {log.tensorboard.dir or os.path.abspath(cfg.run.root)}"
    if backend == "mlflow":
        uri = log.mlflow.tracking_uri or default_mlflow_uri(cfg.run.root)
        where = uri if uri.startswith(("http://", "https://", "databricks")) else f"mlflow ui --backend-store-uri {uri}"
        return f"{where} (experiment '{log.mlflow.experiment}')"
    return f"project '{log.wandb.project}', run {os.path.basename(os.path.abspath(run_dir))}"


def log_step(trackers: Trackers, metrics: Dict) -> None:
    """One metrics.jsonl line, nested keys joined by '/' (families/frames/accuracy, ...)."""
    trackers.log_metrics(flatten_metrics({k: v for k, v in metrics.items() if k != "step"}), int(metrics["step"]))


def log_evaluation(trackers: Trackers, label: str, result: Dict, prefix: str = "eval") -> None:
    """A held-out evaluation (eval/<label>.json) per profile and per family, at the step it was taken."""
    figures = {"profiles": result.get("profiles", {}), "families": result.get("families", {})}
    trackers.log_metrics(flatten_metrics(figures, metric_name(prefix, label)), int(result.get("step", 0)))


def log_training_curves(trackers: Trackers, run_dir: str, step: int) -> None:
    """The run's training curves as an image, drawn from metrics.jsonl at the end of training."""
    if not trackers.active:
        return
    out = os.path.join(run_dir, "training_curves.png")
    training_curves_plot(read_metrics(run_dir), out, f"Training curves of {os.path.basename(os.path.abspath(run_dir))}")
    trackers.log_image("plots/training_curves", out, step)


def log_report(trackers: Trackers, eval_dir: str, step: int) -> None:
    """An evaluation report's figures and plots (pipelines/report.py) into the run's tracker runs."""
    folder = metric_name("reports", os.path.relpath(eval_dir, os.path.join(eval_dir, "..", "..")))
    for name in sorted(os.listdir(eval_dir)):
        path = os.path.join(eval_dir, name)
        if name.endswith(".png"):
            trackers.log_image(metric_name(folder, name[:-4]), path, step)
        elif name in ("report.md", "report.html", "report.json"):
            trackers.log_artifact(path, folder)


def log_summary(trackers: Trackers, run_dir: str, summary: Dict, step: int) -> None:
    """What GRPO changed on the held-out questions (summary.json), as figures and as the file."""
    keys = ("reward_difference", "cost_first_cost", "wall_s", "steps")
    trackers.log_metrics(flatten_metrics({k: summary[k] for k in keys if k in summary}, "summary"), step)
    trackers.log_artifact(os.path.join(run_dir, "summary.json"), "run")


def report_to_run(cfg: OrchestraConfig, run_dir: str, eval_dir: str, step: int, note: Callable[[str], None]) -> None:
    """`orchestra-ray eval`: the report's plots and files go to the trackers' runs of the run it evaluated."""
    if not set(cfg.logging.backends) - {"console"}:
        return
    trackers = start_trackers(cfg, run_dir, note, resume=True, with_config=False)
    try:
        log_report(trackers, eval_dir, step)
    finally:
        trackers.close()
