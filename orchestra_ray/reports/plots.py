"""The report's pictures (PNG, matplotlib): accuracy against cost (the Pareto picture), tool-call
share per tool (as the paper's Figure 3) and training curves from a run's metrics."""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from orchestra_ray.reports.figures import Figures  # noqa: E402

POLICY = "policy"
# Methods whose choices depend on the preference profile are drawn once per profile.
PER_PROFILE = {POLICY, "cascade", "router"}
_MARKERS = {POLICY: "*", "cascade": "s", "router": "D", "oracle": "P", "random": "x", "cheapest": "v", "strongest": "^"}


def pareto_frontier(points: Sequence[tuple]) -> List[tuple]:
    """The (cost, accuracy) points no other point beats on both (lower cost, higher accuracy)."""
    front, best = [], float("-inf")
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((c, a))
            best = a
    return front


def accuracy_cost_plot(tables: Mapping[str, List[Figures]], path: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9.5, 6.5))
    points = []
    profiles = list(tables)
    colours = {p: plt.cm.tab10(i % 10) for i, p in enumerate(profiles)}
    arms = sorted({f.method for figs in tables.values() for f in figs if f.method.startswith("arm:")})
    arm_colours = {m: plt.cm.Dark2(i % 8) for i, m in enumerate(arms)}
    drawn, names = set(), {}
    for profile in profiles:
        for f in tables[profile]:
            if f.method not in PER_PROFILE and f.method in drawn:
                continue
            drawn.add(f.method)
            per_profile = f.method in PER_PROFILE
            x, y = max(f.cost, 1e-7), 100 * f.accuracy
            lo, hi = 100 * f.accuracy_ci[0], 100 * f.accuracy_ci[1]
            marker = "o" if f.method in arm_colours else _MARKERS.get(f.method, "o")
            colour = colours[profile] if per_profile else arm_colours.get(f.method, "black")
            label = f"{f.method} ({profile})" if per_profile else f.method
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt=marker, color=colour, ms=14 if f.method == POLICY else 8,
                        capsize=3, label=label, alpha=0.85, mfc="none" if f.method in ("strongest", "cheapest") else colour)
            if not per_profile:  # baselines on the same point (e.g. cheapest = an arm) share one label
                names.setdefault((x, y), []).append(f.method)
            if f.method != "oracle":  # a ceiling, not a method one could run
                points.append((x, y))
    dearest = max((x for x, _ in names), default=1.0)
    for (x, y), methods in names.items():
        right = x >= dearest / 3  # labels of the dearest points go to their left, clear of the legend
        ax.annotate(" = ".join(methods), (x, y), textcoords="offset points", xytext=(-10, 9) if right else (7, -12),
                    ha="right" if right else "left", fontsize=7, color="dimgray")
    front = pareto_frontier(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="black", lw=1, label="Pareto frontier (oracle excluded)")
    ax.set_xscale("log")
    ax.set_xlabel("cost per question (USD, log scale)")
    ax.set_ylabel("accuracy on held-out questions (%, 95% bootstrap interval)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tool_share_plot(bars: Mapping[str, Dict[str, float]], tools: Sequence[str], path: str, title: str) -> None:
    """One 100% stacked bar per label (e.g. the policy under each profile), one segment per tool."""
    labels = list(bars)
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(labels) + 2))
    left = [0.0] * len(labels)
    for i, tool in enumerate(tools):
        widths = [100 * bars[label].get(tool, 0.0) for label in labels]
        ax.barh(labels, widths, left=left, color=plt.cm.tab10(i % 10), label=tool)
        for j, w in enumerate(widths):
            if w >= 6:
                ax.text(left[j] + w / 2, j, f"{w:.0f}%", ha="center", va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of tool calls (%)")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="tool")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_curves_plot(metrics: Sequence[dict], path: str, title: str) -> None:
    """Reward, accuracy and cost per GRPO step (the run's metrics.jsonl)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    steps = [m["step"] for m in metrics]
    panels = (("reward", "reward (group-normalised)", 1.0), ("accuracy", "accuracy (%)", 100.0),
              ("cost", "cost per episode (USD)", 1.0))
    for ax, (key, label, scale) in zip(axes, panels):
        if steps:
            ax.plot(steps, [scale * m[key] for m in metrics], marker="o", ms=3)
        else:
            ax.text(0.5, 0.5, "no GRPO steps in this run yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("GRPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
