"""Peak memory of the driver and the local Ray processes it started, sampled in the background.

Proportional set size (PSS) is summed, so pages shared between processes (the object store,
shared libraries) count once, as they do on the machine."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    def __init__(self, interval_s: float = 0.5):
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                continue  # the process ended between listing and reading
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.sample()

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1e9
