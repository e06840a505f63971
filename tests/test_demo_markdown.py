"""The demo's report names the base model its figures are of, where the run trained it: the same
code and seed give other floats on a CPU with other kernels."""

import json
from pathlib import Path

from cls_ray.demo import markdown

SAVED = Path(__file__).parent / "data" / "demo_report.json"  # a real run's figures


def test_the_report_names_the_base_model_the_run_trained():
    report = json.loads(SAVED.read_text())
    report.pop("base_model", None)  # a report of a run before the fingerprint
    assert "Base model" not in markdown(report, [])
    report["base_model"] = {}  # a user's own checkpoint: nothing recorded to name
    assert "Base model" not in markdown(report, [])
    report["base_model"] = {
        "weights_sha256": "5d3e03de950f" + "0" * 52,
        "machine": {"kernels": "AVX512", "threads": 2, "torch": "2.13.0+cpu", "settings": {}},
    }
    assert (
        "Base model: weights 5d3e03de950f, trained with torch 2.13.0+cpu's AVX512 kernels on 2 "
        "threads" in markdown(report, [])
    )
