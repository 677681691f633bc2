"""TensorBoard: one event folder per run, written with PyTorch's SummaryWriter."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import yaml

from orchestra_ray.tracking.tracker import Tracker


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, log_dir: str, resume_step: Optional[int]):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        # A resumed run redoes the steps after its checkpoint: purge_step hides what they logged before.
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=None if resume_step is None else resume_step + 1)

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = yaml.safe_dump(dict(config), sort_keys=False)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)  # markdown code block
        self.writer.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # a user watching the run sees each step as it ends

    def log_image(self, name: str, path: str, step: int) -> None:
        import matplotlib.image

        pixels = matplotlib.image.imread(path)  # H x W x 4 (RGBA) floats in [0, 1] for a PNG
        self.writer.add_image(name, pixels[..., :3], step, dataformats="HWC")
        self.writer.flush()

    def log_artifact(self, path: str, folder: str) -> None:
        if path.endswith((".md", ".txt")):  # TensorBoard keeps text, not files
            with open(path, encoding="utf-8") as f:
                self.writer.add_text(f"{folder}/{path.rsplit('/', 1)[-1]}", f.read(), 0)
            self.writer.flush()

    def state(self) -> Dict:
        return {"dir": self.log_dir}

    def close(self) -> None:
        self.writer.close()
