"""Where a process's time goes: wall seconds per stage, summed over calls.

`timed` wraps an object (an engine, a tool client) so that calls of the named methods are counted
under a stage, without the object or its callers knowing.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping


class StageClock:
    def __init__(self):
        self.seconds: Dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def take(self) -> Dict[str, float]:
        """The seconds counted so far, and a fresh start."""
        out, self.seconds = self.seconds, {}
        return out


class _Timed:
    def __init__(self, inner: Any, clock: StageClock, stages: Mapping[str, str]):
        self._inner, self._clock, self._stages = inner, clock, dict(stages)

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        stage = self._stages.get(name)
        if stage is None or not callable(attr):
            return attr

        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._clock.add(stage, time.perf_counter() - t0)

        return call


def timed(inner: Any, clock: StageClock, stages: Mapping[str, str]) -> Any:
    """`inner` with each call of a method named in `stages` (method -> stage) counted on `clock`."""
    return _Timed(inner, clock, stages)
