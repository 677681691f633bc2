"""What the user sees: the long stages' progress (pre-training, warm start), one live line per step,
evaluation lines and the final summary."""

from __future__ import annotations

import sys
import time
from typing import Callable, Dict, Optional

from tqdm import tqdm

from orchestra_ray.families.task import FRAMES


def _tty(stream) -> bool:
    return getattr(stream, "isatty", lambda: False)()


class Stage:
    """A long stage that reports (done, total) as it goes (pre-training the tiny base model, the warm
    start): a bar on a terminal; in a log its size when it starts, then a line every `every_s`
    seconds with the rate and the time left."""

    def __init__(self, desc: str, unit: str, stream, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.desc, self.unit, self.stream, self.every_s, self.clock = desc, unit, stream, every_s, clock
        self.bar: Optional[tqdm] = None
        self.start: Optional[tuple] = None  # (time, done) of the first report
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.start is None:
            self.start, self.last = (now, done), now
            if _tty(self.stream):
                self.bar = tqdm(total=total, initial=done, desc=self.desc, unit=f" {self.unit}", file=self.stream,
                                dynamic_ncols=True, leave=False,
                                bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| {rate_fmt} {elapsed}<{remaining}")
            else:
                print(f"{self.desc}: {total} {self.unit}", file=self.stream, flush=True)
        elif self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif now - self.last >= self.every_s and done < total:
            self.last = now
            print(self.line(done, total, now), file=self.stream, flush=True)
        if done >= total and self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, done: int, total: int, now: float) -> str:
        t0, d0 = self.start
        rate = (done - d0) / max(now - t0, 1e-9)
        left = tqdm.format_interval((total - done) / rate) if rate > 0 else "?"
        return (f"{self.desc}: {done}/{total} {self.unit}  {rate:.2f} {self.unit}/s  "
                f"elapsed {tqdm.format_interval(now - t0)}, {left} left")


class Progress:
    def __init__(self, stream=None, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stdout
        self.bar: Optional[tqdm] = None
        self.every_s, self.clock = every_s, clock  # a stage's log lines (Stage)

    def stage(self, desc: str, unit: str) -> Stage:
        return Stage(desc, unit, self.stream, self.every_s, self.clock)

    def note(self, text: str) -> None:
        (self.bar.write if self.bar else lambda t: print(t, file=self.stream, flush=True))(text)

    def start(self, total: int, done: int) -> None:
        if not _tty(self.stream):
            return  # logs and pipes get the per-step lines only
        self.bar = tqdm(total=total, initial=done, desc="GRPO", unit="step", file=self.stream, dynamic_ncols=True,
                        bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| {elapsed}<{remaining} {postfix}")

    def step(self, m: Dict) -> None:
        line = (f"step {m['step']:>3}  reward {m['reward']:.3f}  acc {m['accuracy']:.2f}  cost ${m['cost']:.5f}  "
                f"turns {m['turns']:.2f}  fmt-err {m['format_error_rate']:.2f}  {m['tokens_per_s']:.0f} tok/s  "
                f"kl {m.get('kl', 0.0):.4f}  v{m['weight_version']}")
        if self.bar is not None:
            self.bar.write(line)
            self.bar.set_postfix_str(f"reward {m['reward']:.3f} cost ${m['cost']:.5f}")
            self.bar.update(1)
        else:
            self.note(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def eval_line(self, label: str, result: Dict) -> None:
        for name, p in result["profiles"].items():
            self.note(f"  [{label}] {name:<15} reward {p['reward']:.3f}  acc {p['accuracy']:.2f}  cost ${p['cost']:.5f}  "
                      f"latency {p['latency']:.1f}s  n={p['n']}")


def format_summary(s: Dict, peak_gb: Optional[float], memory_scope: str = "driver + local Ray",
                   cluster_stopped: bool = False) -> str:
    """The run's closing summary. `cluster_stopped`: the run started its own local cluster, which
    is gone by the time this prints, and its dashboard with it."""
    lines = ["", "=== summary ==="]
    mem = f"   peak memory ({memory_scope}, PSS): {peak_gb:.2f} GB" if peak_gb else ""
    lines.append(f"steps: {s.get('steps')}   wall time: {s.get('wall_s', 0):.0f}s{mem}")
    if "eval_warm_start" in s and "eval_final" in s:
        lines.append("held-out evaluation (reward normalised against the zoo's single-expert answers):")
        lines.append(f"  {'profile':<15} {'reward before':>13} {'after':>7} {'acc before':>10} {'after':>6} {'cost before':>12} {'after':>9}")
        for name in s["eval_final"]:
            b, a = s["eval_warm_start"].get(name), s["eval_final"][name]
            if b is None:
                continue
            lines.append(f"  {name:<15} {b['reward']:>13.3f} {a['reward']:>7.3f} {b['accuracy']:>10.2f} {a['accuracy']:>6.2f} "
                         f"${b['cost']:>11.5f} ${a['cost']:>8.5f}")
    fb, fa = s.get("eval_warm_start_families", {}), s.get("eval_final_families", {})
    if set(fa) - {FRAMES}:  # a mixed run
        lines.append("held-out evaluation per task family (warm start -> final):")
        for name, a in fa.items():
            b = fb.get(name)
            if b is None:
                continue
            line = (f"  {name:<11} n {a['n']:<4} reward {b['reward']:.3f} -> {a['reward']:.3f}  "
                    f"accuracy {b['accuracy']:.2f} -> {a['accuracy']:.2f}  cost ${b['cost']:.5f} -> ${a['cost']:.5f}")
            if "function_match" in a and "function_match" in b:
                line += (f"  gold functions {b['function_match']:.2f} -> {a['function_match']:.2f}"
                         f"  arguments {b['argument_match']:.2f} -> {a['argument_match']:.2f}")
            c = s.get("success_change", {}).get(name)
            if c:  # paired: the same episodes, so noise is told from change
                line += (f"\n  {'':<11} episodes solved +{c['gained']} -{c['lost']} of {c['episodes']};"
                         f" success change per task {c['mean']:+.3f} (95% bootstrap {c['ci95'][0]:+.3f} .. {c['ci95'][1]:+.3f})")
            lines.append(line)
    if "reward_difference" in s:
        d = s["reward_difference"]
        lines.append(f"mean held-out reward change: {d['mean']:+.3f}  (95% bootstrap interval {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})")
    if "cost_first_cost" in s:
        c = s["cost_first_cost"]
        lines.append(f"cost-first profile, cost per question: ${c['warm_start']:.5f} -> ${c['final']:.5f}  (x{c['ratio']:.2f})")
    lines.append(f"checkpoint: {s.get('checkpoint')}")
    lines.append(f"run directory: {s['run_dir']}")
    if s.get("dashboard_url") and cluster_stopped:
        lines.append(f"Ray dashboard: {s['dashboard_url']} stopped with the run's local cluster; to keep one after a run, "
                     "start a cluster with `ray start --head` and train with --address")
    elif s.get("dashboard_url"):
        lines.append(f"Ray dashboard: {s['dashboard_url']} (metrics: orchestra_* in its Metrics view and on Prometheus)")
    return "\n".join(lines)
