"""The run summary's dashboard line, without Ray: a joined cluster's dashboard is still there after
the run; the embedded cluster's stopped with it, and the summary says so rather than offering a
dead link."""

from pipelines.progress import format_summary

SUMMARY = {"steps": 2, "wall_s": 10.0, "run_dir": "/tmp/runs/x", "checkpoint": "/tmp/runs/x/checkpoints/step_000002",
           "dashboard_url": "http://127.0.0.1:8265"}


def _dashboard_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Ray dashboard"))


def test_joined_cluster_keeps_its_dashboard_link():
    line = _dashboard_line(format_summary(SUMMARY, None, "driver only", cluster_stopped=False))
    assert "http://127.0.0.1:8265" in line and "stopped" not in line


def test_embedded_cluster_dashboard_reported_as_stopped():
    line = _dashboard_line(format_summary(SUMMARY, None, cluster_stopped=True))
    assert "http://127.0.0.1:8265 stopped" in line and "ray start --head" in line


def test_no_dashboard_no_line():
    text = format_summary({**SUMMARY, "dashboard_url": ""}, None, cluster_stopped=True)
    assert "Ray dashboard" not in text


def _family(reward, accuracy, **extra):
    return {"n": 48, "reward": reward, "accuracy": accuracy, "cost": 0.0, "latency": 0.0, "tool_share": {}, **extra}


def test_mixed_run_summary_has_a_line_per_family_with_domain_call_match():
    before = {"frames": _family(0.19, 0.56), "domain": _family(0.0, 0.0, function_match=0.88, argument_match=0.14)}
    after = {"frames": _family(0.21, 0.58), "domain": _family(0.02, 0.02, function_match=1.0, argument_match=0.2)}
    text = format_summary({**SUMMARY, "eval_warm_start_families": before, "eval_final_families": after}, None)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "accuracy 0.56 -> 0.58" in lines["frames"] and "gold functions" not in lines["frames"]
    assert "gold functions 0.88 -> 1.00" in lines["domain"] and "arguments 0.14 -> 0.20" in lines["domain"]


def test_frames_only_run_has_no_family_table():
    text = format_summary({**SUMMARY, "eval_warm_start_families": {"frames": _family(0.1, 0.5)},
                           "eval_final_families": {"frames": _family(0.2, 0.5)}}, None)
    assert "per task family" not in text
