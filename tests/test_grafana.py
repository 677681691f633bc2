"""The Grafana dashboard clusters/grafana/orchestra-ray.json: every metric of the catalogue in
actors/metrics.py is on a panel under the name Ray exports it with, and nothing else is queried.

Ray prefixes exported names with `ray_`, a counter is scraped as `<name>_total` and a histogram as
`<name>_bucket`, `_sum` and `_count`; the last test records every metric on a real local cluster and
checks those names against its Prometheus endpoint.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Set

import pytest
import ray

from actors.metrics import CATALOGUE
from ports import free_port

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "clusters" / "grafana" / "orchestra-ray.json"
SUFFIXES = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
# Labels Ray adds to every series of an application metric.
RAY_LABELS = {"SessionName", "NodeAddress", "WorkerId", "Component", "Version", "JobId"}
METRIC = re.compile(r"\bray_orchestra_[A-Za-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def exported(name: str) -> Set[str]:
    return {f"ray_{name}{s}" for s in SUFFIXES[CATALOGUE[name][0]]}


def metric_of(series: str) -> str:
    """The catalogue name behind an exported series name ("" when none)."""
    for name in CATALOGUE:
        if series in exported(name):
            return name
    return ""


@pytest.fixture(scope="module")
def dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dashboard: dict) -> List[dict]:
    """Every panel that shows data, including those inside collapsed rows."""
    out = []
    for p in dashboard["panels"]:
        if p["type"] == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def exprs(dashboard: dict) -> List[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def queried_series(dashboard: dict) -> Set[str]:
    found = {m for e in exprs(dashboard) for m in METRIC.findall(e)}
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        found |= set(METRIC.findall(text))
    return found


def test_every_catalogue_metric_is_on_a_panel(dashboard):
    shown = {m for e in exprs(dashboard) for m in METRIC.findall(e)}
    for name, (kind, _, _) in CATALOGUE.items():
        want = f"ray_{name}_bucket" if kind == "histogram" else f"ray_{name}{SUFFIXES[kind][0]}"
        assert want in shown, f"{name} ({kind}) is on no panel; Prometheus has it as {want}"


def test_dashboard_queries_only_exported_names(dashboard):
    for series in queried_series(dashboard):
        assert metric_of(series), f"the dashboard queries {series}, which Ray does not export for any catalogue metric"


def test_grouping_and_legend_labels_exist(dashboard):
    """A `by (label)` or `{{label}}` on a label the metric lacks shows one unlabelled line."""
    for p in panels(dashboard):
        for t in p.get("targets", []):
            names = {metric_of(s) for s in METRIC.findall(t["expr"])} - {""}  # unknown names: the test above
            allowed = set(RAY_LABELS)
            for name in names:
                allowed |= set(CATALOGUE[name][2]) | ({"le"} if CATALOGUE[name][0] == "histogram" else set())
            grouped = {lab.strip() for g in GROUPING.findall(t["expr"]) for lab in g.split(",") if lab.strip()}
            assert grouped <= allowed, f"panel '{p['title']}': groups by {sorted(grouped - allowed)}, not labels of {sorted(names)}"
            legend = set(LEGEND_LABEL.findall(t.get("legendFormat", "")))
            assert legend <= grouped | RAY_LABELS, f"panel '{p['title']}': legend uses {sorted(legend - grouped)}, which the query drops"


def test_panels_have_titles_units_and_queries(dashboard):
    titles = []
    for p in panels(dashboard):
        assert p.get("title", "").strip(), f"panel {p.get('id')} has no title"
        titles.append(p["title"])
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"panel '{p['title']}' has no unit"
        assert p.get("targets") and all(t.get("expr", "").strip() for t in p["targets"]), f"panel '{p['title']}' queries nothing"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"panel '{p['title']}': repeated refId"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel '{p['title']}' is wider than the grid"
    assert len(titles) == len(set(titles)), "two panels share a title"
    ids = [p["id"] for p in dashboard["panels"]] + [q["id"] for p in dashboard["panels"] for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_datasource_is_templated(dashboard):
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert [v["query"] for v in variables] == ["prometheus"], "one Prometheus data source variable"
    ref = {"type": "prometheus", "uid": "${%s}" % variables[0]["name"]}
    for p in panels(dashboard):
        assert p.get("datasource") == ref, f"panel '{p['title']}' does not use the data source variable"
        for t in p["targets"]:
            assert t.get("datasource", ref) == ref, f"panel '{p['title']}' target {t['refId']} names its own data source"
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == ref, f"variable {v['name']} does not use the data source variable"


# ---- against Ray's Prometheus endpoint ----------------------------------------------------------
@ray.remote(num_cpus=0)
class Recorder:
    """Records each catalogue metric once, in a worker process as the run's actors do."""

    def record_all(self) -> None:
        from actors.metrics import record

        for name, (_, _, tags) in CATALOGUE.items():
            record(name, 1.0, {t: "x" for t in tags})


def scrape(port: int) -> Dict[str, Set[str]]:
    """series name -> label names, from the node's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: Dict[str, Set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_orchestra_[A-Za-z0-9_]+)(?:\{([^}]*)\})?\s", line)
        if m:
            out.setdefault(m.group(1), set()).update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(2) or ""))
    return out


@pytest.fixture(scope="module")
def exported_series():
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        recorder = Recorder.remote()
        ray.get(recorder.record_all.remote())
        want = {f"ray_{n}" + ("_count" if k == "histogram" else SUFFIXES[k][0]) for n, (k, _, _) in CATALOGUE.items()}
        deadline, series = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            series = scrape(port)
            if want <= set(series):
                break
            time.sleep(1)
        return series
    finally:
        ray.shutdown()


def test_dashboard_names_are_what_ray_exports(dashboard, exported_series):
    missing = queried_series(dashboard) - set(exported_series)
    assert not missing, f"the dashboard queries {sorted(missing)}; Ray exported {sorted(exported_series)}"
    for series in queried_series(dashboard):
        tags = set(CATALOGUE[metric_of(series)][2])
        assert tags <= exported_series[series], f"{series} lacks the labels {sorted(tags - exported_series[series])}"
