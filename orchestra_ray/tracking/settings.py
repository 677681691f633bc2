"""Where a run's figures go besides metrics.jsonl: `logging.backends` and each tracker's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

BACKENDS = ("console", "tensorboard", "mlflow", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class TensorBoardConfig:
    dir: Optional[str] = None  # None: <run dir>/tensorboard (`tensorboard --logdir <run.root>` shows every run)


@dataclass
class MLflowConfig:
    # None: a SQLite store beside the runs, sqlite:///<run.root>/mlflow.db; or a server, http://host:5000
    tracking_uri: Optional[str] = None
    experiment: str = "orchestra-ray"


@dataclass
class WandbConfig:
    project: str = "orchestra-ray"
    entity: Optional[str] = None
    # None: WANDB_MODE if set, else online with an API key (WANDB_API_KEY or `wandb login`), else offline
    mode: Optional[str] = None


@dataclass
class LoggingConfig:
    backends: List[str] = field(default_factory=lambda: ["console"])
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def validate_logging_config(cfg: LoggingConfig) -> None:
    """Raises ValueError naming the key at fault."""
    for name in cfg.backends:
        if name not in BACKENDS:
            raise ValueError(f"logging.backends: unknown backend '{name}' (known: {', '.join(BACKENDS)})")
    if len(set(cfg.backends)) != len(cfg.backends):
        raise ValueError(f"logging.backends: a backend is named twice in {list(cfg.backends)}")
    if cfg.wandb.mode is not None and cfg.wandb.mode not in WANDB_MODES:
        raise ValueError(f"logging.wandb.mode: '{cfg.wandb.mode}' is not a mode ({', '.join(WANDB_MODES)})")
    if not cfg.mlflow.experiment:
        raise ValueError("logging.mlflow.experiment: must not be empty")
    if not cfg.wandb.project:
        raise ValueError("logging.wandb.project: must not be empty")
