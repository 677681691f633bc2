"""Process set-up shared by the actors that hold a model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping


def quiet_torch_process(threads: int) -> None:
    """One process per actor on shared cores: cap its threads, and silence progress bars."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@dataclass(frozen=True)
class ActorResources:
    """What one actor asks Ray for: CPUs, GPUs and custom resources (a node label such as {tool: 1})."""

    num_cpus: float
    num_gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)

    def options(self) -> Dict[str, Any]:
        """The keyword arguments of `ActorClass.options`."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.custom)}
