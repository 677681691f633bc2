"""Peak memory of the driver and the local Ray processes it started, sampled in the background.

Proportional set size (PSS) is summed, so pages shared between processes (the object store,
shared libraries) count once, as they do on the machine."""

from __future__ import annotations

import threading
import time

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
        # Reading a large process's PSS walks its page tables (~30 ms for a 5 GB worker): the
        # sampler waits 19 times as long as a sample took, so it never takes over 5 % of a core
        # from the run it measures.
        wait = interval_s
        while not self._stop.wait(wait):
            t = time.perf_counter()
            self.sample()
            wait = max(interval_s, 19 * (time.perf_counter() - t))

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
