"""`orchestra-ray eval` end to end on a real local Ray cluster: a short quickstart run, then the
eval of its checkpoint against every baseline. Every figure in the report's tables is recomputed
here from the eval's Parquet trajectories; the eval refuses questions the policy was trained on."""

import json
import os
import re

import pyarrow.parquet as pq
import pytest

from orchestra_ray.reports.figures import bootstrap_interval
from orchestra_ray.grpo.reward import anchored_reward
from pipelines.cli import main

PROFILES = ["balanced", "cost-first", "accuracy-first"]
BASELINES = {"random", "cheapest", "strongest", "cascade", "oracle", "router"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, frames_dir):
    root = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    assert main([
        "train", "quickstart", f"data.path={frames_dir}", "data.max_train_questions=40",
        "data.max_heldout_questions=10", f"run.root={root}", "run.name=ev", f"policy.cache_dir={cache}",
        "policy.tiny.pretrain_steps=60", "rollout.tasks_per_step=4", "rollout.group_size=4", "rollout.max_turns=3",
        "warm_start.examples=16", "trainer.steps=2", "trainer.checkpoint_every=1", "eval.enabled=false",
        f"preferences.eval_profiles=[{','.join(PROFILES)}]", "eval.bootstrap_samples=300",
    ]) == 0
    run_dir = os.path.join(root, "ev")
    assert main(["eval", run_dir, "--router-iterations", "2"]) == 0
    return run_dir, os.path.join(run_dir, "eval", "step_000002")


def _tables(md: str):
    """heading -> (header, rows) of every table in a Markdown report."""
    out, heading, lines = {}, None, md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        elif lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split(" | ")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            out[heading] = (header, rows)
            continue
        i += 1
    return out


def _records(tdir):
    out = {}
    for name in os.listdir(tdir):
        rows = pq.read_table(os.path.join(tdir, name)).to_pylist()
        for r in rows:
            r["metrics"], r["preference"] = dict(r["metrics"]), dict(r["preference"])
        out[name[:-len(".parquet")].replace("=", ":")] = rows
    return out


def test_report_has_a_table_per_profile_with_the_policy_and_every_baseline(evaluated):
    run_dir, eval_dir = evaluated
    for name in ("report.md", "report.html", "report.json", "eval.json"):
        assert os.path.getsize(os.path.join(eval_dir, name)) > 0
    for png in ("pareto.png", "tool_share.png", "training_curves.png"):
        with open(os.path.join(eval_dir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(os.path.join(eval_dir, "report.md")).read()
    tables = _tables(md)
    meta = json.load(open(os.path.join(eval_dir, "eval.json")))
    arms = {f"arm:{s}" for s in meta["slots"]}
    for p in PROFILES:
        header, rows = tables[f"FRAMES, profile {p}"]
        assert {r[0] for r in rows} == {"policy"} | BASELINES | arms
        assert all(r[1] == "10" for r in rows)  # the same 10 held-out questions for everyone
    assert "Preference adherence (policy, FRAMES)" in tables
    assert "frames: 10 held-out questions (training split 40)" in md
    assert "<table>" in open(os.path.join(eval_dir, "report.html")).read()
    # The router was trained on the training split and kept with the run.
    assert os.path.isfile(os.path.join(run_dir, "router", "training.json"))


def test_every_figure_in_the_tables_is_recomputed_from_the_parquet_trajectories(evaluated):
    _, eval_dir = evaluated
    meta = json.load(open(os.path.join(eval_dir, "eval.json")))
    recs = _records(os.path.join(eval_dir, "trajectories"))
    anchors = {}
    for m in sorted(k for k in recs if k.startswith("arm:")):
        for r in recs[m]:
            if r["preference_profile"] == PROFILES[0]:
                anchors.setdefault(r["question_id"], []).append(r["metrics"])
    tables = _tables(open(os.path.join(eval_dir, "report.md")).read())
    checked = 0
    for p in PROFILES:
        header, rows = tables[f"FRAMES, profile {p}"]
        tools = [h[len("share "):] for h in header if h.startswith("share ")]
        for row in rows:
            group = [r for r in recs[row[0]] if r["preference_profile"] == p and r["family"] == "frames"]
            outcomes = [r["metrics"]["outcome"] for r in group]
            acc = sum(outcomes) / len(outcomes)
            lo, hi = bootstrap_interval(outcomes, meta["bootstrap_samples"], meta["seed"])
            cost = sum(r["metrics"]["cost"] for r in group) / len(group)
            lat = sum(r["metrics"]["latency"] for r in group) / len(group)
            reward = sum(anchored_reward(r["metrics"], anchors[r["question_id"]], r["preference"]) for r in group) / len(group)
            calls = [c["expert"] or c["name"] for r in group for c in r["tool_calls"]
                     if c["name"] != "answer" or c["input_tokens"] > 0]
            assert row[1] == str(len(group))
            assert row[2] == f"{100 * acc:.1f}%"
            assert row[3] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
            assert row[4] == f"{cost:.5f}"
            assert row[5] == f"{lat:.2f}"
            assert row[6] == f"{reward:.3f}"
            for t, cell in zip(tools, row[7:]):
                share = calls.count(t) / len(calls) if calls else 0.0
                assert cell == f"{100 * share:.0f}%", (row[0], p, t)
            checked += 1
    assert checked == len(PROFILES) * (1 + len(BASELINES) + len(meta["slots"]))
    # Adherence rows restate the policy's figures of the profile tables.
    header, rows = tables["Preference adherence (policy, FRAMES)"]
    policy = {p: {h: c for h, c in zip(tables[f"FRAMES, profile {p}"][0], r)}
              for p in PROFILES for r in tables[f"FRAMES, profile {p}"][1] if r[0] == "policy"}
    for row in rows:
        profile, metric, value, balanced = row[0], row[1], row[3], row[4]
        column = {"accuracy": "accuracy", "cost": "cost / question (USD)", "latency": "latency / question (s)"}[metric]
        assert value == policy[profile][column] and balanced == policy["balanced"][column]


def test_the_cascade_and_the_fixed_arms_were_chosen_on_the_training_split(evaluated):
    _, eval_dir = evaluated
    meta = json.load(open(os.path.join(eval_dir, "eval.json")))
    plan = meta["baselines"]
    assert plan["cheapest"] in meta["slots"] and plan["strongest"] in meta["slots"]
    recs = _records(os.path.join(eval_dir, "trajectories"))
    for p in PROFILES:
        order = plan["cascades"][p]
        assert 1 <= len(order) <= 3
        for r in (r for r in recs["cascade"] if r["preference_profile"] == p):
            asked = [c["expert"] for c in r["tool_calls"] if c["name"] == "call_expert"]
            assert asked == order[: len(asked)]
    assert {r["answer_source"] for r in recs["strongest"]} == {plan["strongest"]}


def test_eval_refuses_questions_the_policy_was_trained_on(evaluated, capsys):
    run_dir, _ = evaluated
    # A larger held-out fraction moves questions of the recorded training split into "held-out".
    code = main(["eval", run_dir, "data.heldout_fraction=0.6", "--no-router"])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"refusing to evaluate: \d+ of the \d+ held-out frames questions were in the policy's training split", err)


def test_eval_names_a_path_that_is_no_checkpoint(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err


def _replay_set(frames_dir, out, n=6):
    """Another data set in the replay schema: n FRAMES questions under ids and wording of their own,
    with every arm's recorded answers (a stand-in for another benchmark the zoo's models answered)."""
    import pyarrow as pa

    questions = pq.read_table(os.path.join(frames_dir, "questions.parquet")).to_pylist()
    responses = pq.read_table(os.path.join(frames_dir, "responses.parquet")).to_pylist()
    chosen = {q["question_id"]: q for q in questions[-n:]}
    os.makedirs(out)
    pq.write_table(pa.Table.from_pylist([{**q, "question_id": f"other-{q['question_id']}", "problem": "Other set: " + q["problem"]}
                                         for q in chosen.values()]), os.path.join(out, "questions.parquet"))
    pq.write_table(pa.Table.from_pylist([{**r, "question_id": f"other-{r['question_id']}"} for r in responses
                                         if r["question_id"] in chosen]), os.path.join(out, "responses.parquet"))
    return sorted(f"other-{q}" for q in chosen)


def test_eval_on_another_data_set_holds_out_all_of_it(evaluated, frames_dir, tmp_path, capsys):
    run_dir, own_dir = evaluated
    ids = _replay_set(frames_dir, str(tmp_path / "other-bench"))
    router_key = open(os.path.join(run_dir, "router", "fitted_on.sha256")).read()
    assert main(["eval", run_dir, "--test-data", str(tmp_path / "other-bench"), "--router-iterations", "2"]) == 0
    eval_dir = os.path.join(own_dir, "other-bench")
    meta = json.load(open(os.path.join(eval_dir, "eval.json")))
    assert meta["data_set"] == "other-bench" and meta["split_sizes"]["heldout"] == {"frames": len(ids)}
    recs = _records(os.path.join(eval_dir, "trajectories"))
    for method in ("policy", "cascade", "oracle", "router"):
        assert sorted({r["question_id"] for r in recs[method]}) == ids, method
    asked = [c for r in recs["policy"] for c in r["tool_calls"] if c["expert"]]
    assert asked and all(c["ok"] for c in asked), \
        f"the experts answer the test data's questions: {[c['error'] for c in asked if not c['ok']][:2]}"
    md = open(os.path.join(eval_dir, "report.md")).read()
    assert "other-bench, profile balanced" in md and "FRAMES, profile" not in md
    assert open(os.path.join(run_dir, "router", "fitted_on.sha256")).read() == router_key, \
        "the router fitted on the same training split is reused"
    assert main(["eval", run_dir, "data.max_train_questions=0", "--no-router"]) == 2
    assert "data.max_train_questions" in capsys.readouterr().err
