"""The evaluation report of one eval directory, built only from what the eval wrote there: the
Parquet trajectories of the policy and of every baseline, and eval.json (split sizes, the baselines'
choices made on the training split). Re-running it over the same files gives the same report.

    <run>/eval/<checkpoint>/trajectories/<method>.parquet
    <run>/eval/<checkpoint>/eval.json
 -> report.md, report.html, report.json, pareto.png, tool_share.png, training_curves.png
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

import pyarrow.parquet as pq

from orchestra_ray.reports.document import Heading, Image, Paragraph, Table, to_html, to_markdown
from orchestra_ray.reports.escalation import escalation
from orchestra_ray.reports.figures import BALANCED, Figures, adherence, profile_tables
from orchestra_ray.reports.plots import POLICY, accuracy_cost_plot, tool_share_plot, training_curves_plot
from orchestra_ray.families.task import FRAMES

TRAJECTORIES = "trajectories"
PLOTS = {"pareto": "pareto.png", "tool_share": "tool_share.png", "training_curves": "training_curves.png"}


def method_file(method: str) -> str:
    return method.replace(":", "=") + ".parquet"


def method_of(filename: str) -> str:
    return filename[: -len(".parquet")].replace("=", ":")


def read_records(path: str) -> List[dict]:
    """Parquet rows as the records they were written from (map columns back to dicts)."""
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["metrics"] = dict(r["metrics"])
        r["preference"] = dict(r["preference"])
    return rows


def method_order(methods: Sequence[str]) -> List[str]:
    fixed = [POLICY, "router", "cascade", "strongest", "cheapest", "random"]
    arms = sorted(m for m in methods if m.startswith("arm:"))
    return [m for m in fixed if m in methods] + arms + [m for m in ("oracle",) if m in methods] + \
        sorted(m for m in methods if m not in fixed and m not in arms and m != "oracle")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def figure_row(f: Figures, tools: Sequence[str], first: Optional[str] = None) -> List[str]:
    return [first or f.method, str(f.questions), _pct(f.accuracy), _ci(f.accuracy_ci), f"{f.cost:.5f}", f"{f.latency:.2f}",
            "-" if f.reward is None else f"{f.reward:.3f}", *(f"{100 * f.share.get(t, 0.0):.0f}%" for t in tools)]


def figure_header(tools: Sequence[str], first: str = "method") -> List[str]:
    return [first, "questions", "accuracy", "95% CI", "cost / question (USD)", "latency / question (s)", "reward",
            *(f"share {t}" for t in tools)]


def build_report(eval_dir: str, run_dir: str) -> Dict:
    with open(os.path.join(eval_dir, "eval.json")) as f:
        meta = json.load(f)
    tdir = os.path.join(eval_dir, TRAJECTORIES)
    records = {method_of(n): read_records(os.path.join(tdir, n)) for n in sorted(os.listdir(tdir)) if n.endswith(".parquet")}
    if POLICY not in records:
        raise FileNotFoundError(f"{tdir} has no {method_file(POLICY)}: not an eval directory")
    b, seed = meta["bootstrap_samples"], meta["seed"]
    frames = {m: [r for r in rows if r["family"] == FRAMES] for m, rows in records.items()}
    frames = {m: frames[m] for m in method_order(list(frames)) if frames[m]}
    tables = profile_tables(frames, b, seed)
    others = {fam: profile_tables({POLICY: [r for r in records[POLICY] if r["family"] == fam]}, b, seed)
              for fam in sorted({r["family"] for r in records[POLICY]} - {FRAMES})}
    tools = sorted({t for figs in [*tables.values(), *(p for o in others.values() for p in o.values())]
                    for f in figs for t in f.share})
    profiles = [p for p in meta["profiles"] if p in tables or any(p in o for o in others.values())]
    weights = meta["profile_weights"]
    data = meta.get("data_set", "FRAMES")  # the questions' data set: the run's own, or --test-data's

    blocks: List = [Heading(f"Evaluation: {meta['run_id']}, checkpoint {meta['checkpoint_name']} (step {meta['step']})", 1)]
    split = "; ".join(f"{fam}: {n} held-out questions (training split {meta['split_sizes']['train'].get(fam, 0)})"
                      for fam, n in meta["split_sizes"]["heldout"].items())
    blocks.append(Paragraph(f"Held-out split: {split}. None of these questions is in the training split recorded "
                            f"in the checkpoint. Policy sampled at temperature {meta['temperature']}; accuracy "
                            f"intervals are 95% percentile bootstrap intervals over questions ({b} resamples). "
                            "Reward: each sample normalised against the single-arm trajectories of its question "
                            "under the profile's preference vector, as in training. Every figure below is computed "
                            f"from the Parquet trajectories in {TRAJECTORIES}/."))
    policy_figs: Dict[str, Figures] = {}
    for profile in profiles:
        if profile not in tables:
            continue
        blocks.append(Heading(f"{data}, profile {profile}"))
        blocks.append(Table(figure_header(tools), [figure_row(f, tools) for f in tables[profile]]))
        policy_figs.update({profile: f for f in tables[profile] if f.method == POLICY})
    for fam, by_profile in others.items():
        blocks.append(Heading(f"{fam} tasks (policy only: no expert arms to compare with)"))
        blocks.append(Table(figure_header(tools, "profile"),
                            [figure_row(f, tools, first=p) for p in profiles for f in by_profile.get(p, [])]))
    blocks.append(Heading(f"Preference adherence (policy, {data})"))
    adh = adherence(policy_figs, weights)
    if adh:
        blocks.append(Paragraph(f"For each profile, the metric it asks for, under that profile and under {BALANCED}."))
        blocks.append(Table(["profile", "asks for", "wanted", "value", f"under {BALANCED}", "followed"],
                            [[a.profile, a.metric, a.wanted, _fmt_metric(a.metric, a.value), _fmt_metric(a.metric, a.balanced),
                              "yes" if a.followed else "no"] for a in adh]))
    else:
        blocks.append(Paragraph(f"Needs the {BALANCED} profile and at least one other among the evaluated profiles."))
    orchestration = escalation(frames.get(POLICY, []), meta.get("grades", {}))
    blocks.append(Heading(f"Orchestration (policy, {data})"))
    blocks.append(Paragraph("Episodes that consult more than one expert, and how often a second expert is asked "
                            "after the first abstained (graded 'not attempted' in the data: \"I don't know\") and "
                            "after it answered. A policy that reads what it is told escalates after abstentions more "
                            "often than after answers."))
    blocks.append(Table(["profile", "episodes", "more than one call", "second call after an abstention",
                         "second call after an answer"],
                        [[p, str(o["episodes"]), _share(o["multi_call"], o["episodes"]),
                          _share(o["second_after_abstention"], o["after_abstention"]),
                          _share(o["second_after_answer"], o["after_answer"])]
                         for p in profiles if (o := orchestration.get(p))]))
    blocks.append(Heading("Baselines"))
    plan = meta["baselines"]
    text = [f"arm:X: always ask X and relay its answer. random: a uniformly random arm per question (seed {seed}). "
            f"cheapest: the arm with the lowest cost on the training split ({plan['cheapest']}). strongest: the arm "
            f"with the highest accuracy on the training split ({plan['strongest']}). cascade: ask A; if A abstains, "
            "ask B; then C; the cascade with the best mean reward on the training split, per profile ("
            + "; ".join(f"{p}: {' -> '.join(c)}" for p, c in plan["cascades"].items()) + "). oracle: the cheapest "
            "correct arm of each question (a ceiling, not a method)."]
    if meta.get("router"):
        r = meta["router"]
        text.append(f"router: a PPO policy (RLlib) over the question's sentence embedding ({r['encoder']}) and the "
                    f"preference vector, picking one arm, trained on the training split with the same reward "
                    f"({r['iterations']} PPO iterations; kept in the run's {os.path.basename(r['path'])}/ directory).")
    blocks.extend(Paragraph(t) for t in text)

    accuracy_cost_plot(tables, os.path.join(eval_dir, PLOTS["pareto"]),
                       f"Held-out {data}: accuracy against cost ({meta['run_id']}, step {meta['step']})")
    bars = {f"policy ({p})": policy_figs[p].share for p in profiles if p in policy_figs}
    for ref in ("oracle", "cascade", "router"):
        f = next((f for f in tables.get(BALANCED, []) if f.method == ref), None)
        if f is not None:
            bars[f"{ref} ({BALANCED})"] = f.share
    tool_share_plot(bars, tools, os.path.join(eval_dir, PLOTS["tool_share"]), f"Share of tool calls per tool (held-out {data})")
    metrics = read_metrics(run_dir, meta["step"])
    training_curves_plot(metrics, os.path.join(eval_dir, PLOTS["training_curves"]), f"Training curves of {meta['run_id']}")
    blocks.append(Heading("Pictures"))
    blocks.append(Image(PLOTS["pareto"], "accuracy against cost per question, policy under each profile and baselines"))
    blocks.append(Image(PLOTS["tool_share"], "share of tool calls per tool"))
    blocks.append(Image(PLOTS["training_curves"], "reward, accuracy and cost per GRPO step"))

    title = f"orchestra-ray evaluation: {meta['run_id']}"
    with open(os.path.join(eval_dir, "report.md"), "w") as f:
        f.write(to_markdown(blocks))
    with open(os.path.join(eval_dir, "report.html"), "w") as f:
        f.write(to_html(blocks, title))
    figures = {"frames": {p: [asdict(f) for f in figs] for p, figs in tables.items()},
               "families": {fam: {p: [asdict(f) for f in figs] for p, figs in bp.items()} for fam, bp in others.items()},
               "adherence": [{**asdict(a), "followed": a.followed} for a in adh], "orchestration": orchestration}
    with open(os.path.join(eval_dir, "report.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return figures


def _fmt_metric(metric: str, value: float) -> str:
    if metric == "cost":
        return f"{value:.5f}"
    if metric == "latency":
        return f"{value:.2f}"
    return _pct(value)


def read_metrics(run_dir: str, up_to_step: Optional[int] = None) -> List[dict]:
    """The run's metrics.jsonl lines (up to a step), without lines cut short by a kill."""
    path = os.path.join(run_dir, "metrics.jsonl")
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if up_to_step is None or m.get("step", 0) <= up_to_step:
                    out.append(m)
    return out


def _share(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "-"
