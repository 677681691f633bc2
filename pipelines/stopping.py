"""Stopping a run on SIGINT or SIGTERM: it stops where it is (the main thread raises), its actors are
ended by the caller's clean-up, and one line says what was kept and how to resume."""

from __future__ import annotations

import os
from typing import List, Optional


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run: it stops where it is, its actors are ended, and what it kept
    is said in one line."""

    def __init__(self, signal_name: str, what_was_kept: str = ""):
        super().__init__(signal_name)
        self.signal_name, self.kept = signal_name, what_was_kept


RECEIVED: List[str] = []  # the signals that stopped this process


def stop_on_signals() -> None:
    """SIGINT and SIGTERM stop the run in the main thread (also when the shell started it with
    SIGINT ignored); a second one ends the process at once."""
    import signal

    def handler(signum, frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        RECEIVED.append(signal.Signals(signum).name)
        raise Stopped(RECEIVED[-1])

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def kept(run_dir: Optional[str]) -> str:
    """What a stopped run leaves to resume from, in words."""
    from orchestra_ray import checkpoint as ckpt

    if run_dir is None:
        return "nothing was written yet"
    latest = ckpt.latest_verified(run_dir)[0]
    warm = os.path.join(ckpt.checkpoints_dir(run_dir), "warm_start", "state.json")
    if latest is None and not os.path.isfile(warm):
        return f"no checkpoint yet in {run_dir}; start it again"
    return f"last checkpoint: {latest or os.path.dirname(warm)}; continue with --resume {run_dir}"
