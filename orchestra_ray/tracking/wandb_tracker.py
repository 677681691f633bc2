"""Weights & Biases: one run per run directory (its name and id), through wandb's own client;
offline (files to sync later) when no API key is set up."""

from __future__ import annotations

import netrc
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import urlparse

from orchestra_ray.tracking.settings import WandbConfig
from orchestra_ray.tracking.tracker import Tracker

STEP = "step"  # every figure is plotted against the GRPO step (wandb's own counter only grows)


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None  # where `wandb login` keeps the key
    except (OSError, netrc.NetrcParseError):
        return False


def run_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:64] or "run"


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, cfg: WandbConfig, run_name: str, run_dir: str, resumed: Optional[Dict], note: Callable[[str], None]):
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE")
        if mode is None:
            mode = "online" if has_api_key() else "offline"
            if mode == "offline":
                note(f"wandb: no API key (WANDB_API_KEY or `wandb login`): logging offline under {run_dir}/wandb; "
                     "`wandb sync` uploads it later")
        self.id = (resumed or {}).get("id") or run_id(run_name)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=run_name, id=self.id, dir=run_dir,
                              mode=mode, resume="allow" if resumed else None, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True))  # the run prints its own lines
        # A resumed run redoes the steps after its checkpoint; with STEP as the x axis they are
        # logged again at their own step instead of being refused as going backwards.
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, STEP: step})

    def log_image(self, name: str, path: str, step: int) -> None:
        import wandb

        self.run.log({name: wandb.Image(path), STEP: step})

    def log_artifact(self, path: str, folder: str) -> None:
        import wandb

        artifact = wandb.Artifact(run_id(f"{self.id}-{folder}-{os.path.basename(path)}"), type=folder.split("/")[0])
        artifact.add_file(path)
        self.run.log_artifact(artifact)

    def state(self) -> Dict:
        return {"id": self.id}

    def close(self) -> None:
        self.run.finish()
