"""One run's experiment trackers behind one object: a tracker that fails is one warning line and is
then left out; the run goes on (figures are in metrics.jsonl whatever the trackers do)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

STATE_FILE = "trackers.json"  # in the run directory: each tracker's run id, so --resume continues it


class Tracker:
    """What every backend does; the defaults do nothing."""

    name = "tracker"

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_image(self, name: str, path: str, step: int) -> None: ...

    def log_artifact(self, path: str, folder: str) -> None: ...

    def state(self) -> Dict:
        """What `resume` needs to continue this tracker's run."""
        return {}

    def close(self) -> None: ...


class Trackers:
    def __init__(self, trackers: List[Tracker], warn: Callable[[str], None], run_dir: str):
        self.active, self.warn, self.run_dir = list(trackers), warn, run_dir
        self._save_state()

    @property
    def names(self) -> List[str]:
        return [t.name for t in self.active]

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for t in list(self.active):
            try:
                call(t)
            except Exception as exc:  # a tracker's own failure must never stop training
                self.active.remove(t)
                self.warn(f"warning: {t.name} tracker: {what} failed ({type(exc).__name__}: {first_line(exc)}); "
                          f"{t.name} is off for the rest of this run (metrics.jsonl has every figure)")

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The resolved config (nested, plain data) as the run's parameters."""
        self._each("logging the config", lambda t: t.log_config(config))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if metrics:
            self._each(f"logging step {step}", lambda t: t.log_metrics(metrics, step))

    def log_image(self, name: str, path: str, step: int) -> None:
        self._each(f"logging {os.path.basename(path)}", lambda t: t.log_image(name, path, step))

    def log_artifact(self, path: str, folder: str) -> None:
        self._each(f"logging {os.path.basename(path)}", lambda t: t.log_artifact(path, folder))

    def close(self) -> None:
        self._each("closing", lambda t: t.close())
        self.active = []

    def _save_state(self) -> None:
        state = read_state(self.run_dir)
        state.update({t.name: t.state() for t in self.active if t.state()})
        tmp = os.path.join(self.run_dir, STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, os.path.join(self.run_dir, STATE_FILE))


def read_state(run_dir: str) -> Dict:
    """The trackers' run ids of an earlier start of this run ({} for none, or a damaged file)."""
    try:
        with open(os.path.join(run_dir, STATE_FILE)) as f:
            state = json.load(f)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def first_line(exc: BaseException) -> str:
    """An error's first line, for a one-line warning."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no message"


def resumed_state(run_dir: str, name: str, resume: bool) -> Optional[Dict]:
    state = read_state(run_dir).get(name) if resume else None
    return state if isinstance(state, dict) else None
