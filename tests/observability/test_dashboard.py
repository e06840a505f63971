"""The Grafana dashboard: Grafana's model, every query names a series the code exports (the
metric catalogue), every exported metric has a panel, and the committed ConfigMap holds it."""

import json
import re

import yaml

from cls_ray import metrics
from cls_ray.dashboard import dashboard
from tests.helpers import ROOT

SERIES = re.compile(r"\bray_cls_ray_\w+")


def _exported() -> set[str]:
    names = set()
    for m in metrics.CATALOGUE:
        parts = ("bucket", "sum", "count") if m.kind == "histogram" else ("",)
        names |= {metrics.prometheus_name(m, p) for p in parts}
    return names


def _exprs(d: dict) -> list[str]:
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_panels_are_grafanas_model_with_unique_ids_and_places():
    d = dashboard()
    assert d["uid"] and d["schemaVersion"] >= 36 and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    places = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in d["panels"]}
    assert len(places) == len(d["panels"])  # no two panels on one spot
    for p in d["panels"]:
        assert p["type"] in {"timeseries", "barchart", "table", "stat"} and p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
    assert json.loads(json.dumps(d)) == d  # plain JSON


def test_every_query_names_an_exported_series_and_every_metric_has_a_panel():
    exported = _exported()
    used = set()
    for expr in _exprs(dashboard()):
        names = set(SERIES.findall(expr))
        assert names and names <= exported, (expr, names - exported)
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        used |= names
    missing = {m.name for m in metrics.CATALOGUE if not any(m.name in u for u in used)}
    assert missing == set(), f"metrics without a panel: {missing}"


def test_a_query_of_an_unknown_metric_would_be_caught():
    assert not SERIES.findall("rate(ray_other_total[5m])")
    assert "ray_cls_ray_not_a_metric" not in _exported()


def test_the_committed_config_map_holds_the_dashboard():
    (doc,) = yaml.safe_load_all((ROOT / "cluster/kuberay/grafana-dashboard.yaml").read_text())
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(doc["data"]["cls-ray.json"]) == dashboard()


def test_metric_names_and_descriptions_are_ascii_as_rays_metrics_api_requires():
    for m in metrics.CATALOGUE:
        assert (m.name + m.description).isascii(), m.name  # Ray refused "R(τ)" at record time
        assert re.fullmatch(r"[a-z_]+", m.name) and all(re.fullmatch(r"[a-z_]+", t) for t in m.tags)
