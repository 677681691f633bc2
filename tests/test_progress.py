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
