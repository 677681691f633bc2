"""Process set-up shared by the actors that hold a model."""

from __future__ import annotations

import os


def quiet_torch_process(threads: int) -> None:
    """One process per actor on shared cores: cap its threads, and silence progress bars."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
