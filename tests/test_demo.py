"""The main job end to end on a tiny embedded default: `cls-ray demo` builds what is missing,
serves simulated users over HTTP, sleeps, promotes, measures and writes its report."""

import json

import pytest
from ray import serve

from cls_ray.cli import main
from cls_ray.config import load_config
from cls_ray.registry import registry_for
from tests.helpers import OPEN_GATE, TINY_OVERRIDES, TINY_PRM_OVERRIDES, free_port, set_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_demo_runs_the_whole_loop_and_writes_the_report(tmp_path, ray_local, capsys):
    overrides = [
        *TINY_OVERRIDES,
        *TINY_PRM_OVERRIDES,
        f"state_dir={tmp_path}",
        "store.collection_prefix=demo",
        f"serve.port={free_port()}",
        "serve.app_name=cls-ray-demo",
        "serve.generator.autoscaling.max_replicas=1",
        "consolidate.steps=20",
        "consolidate.batch_size=8",
        "consolidate.new_per_family=2",
        "consolidate.eval_per_family=2",
        "consolidate.sample_n=2",
        *OPEN_GATE,
    ]
    args = set_args(overrides)

    serve.shutdown()  # a Serve left by an earlier test keeps its own HTTP port
    assert main(["demo", "--json", *args]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    out = json.loads(printed.strip().splitlines()[-1])
    # The console: its own lines and one display per stage, under two screens; the rest in
    # the log it names first, the workers' output too, the known-harmless warnings nowhere.
    assert len((printed + captured.err).splitlines()) < 120, printed + captured.err
    log = tmp_path / "logs" / captured.err.splitlines()[0].split()[1].rpartition("/")[2]
    assert log.exists() and "prm train:  60/60 step (100%)" in captured.err
    text = log.read_text()
    assert "(RayTrainWorker pid=" in text and "Failed to query Ray Train Controller" not in text
    assert "== 5/6 loop: users, scores, sleep, promotion, measurement" in printed
    assert set(out["stage_seconds"]) == {"bootstrap", "ingest", "prm", "serve", "loop", "report"}
    assert "report:" in printed and "new family" in printed
    report_dir = tmp_path / "reports" / "demo"
    md = (report_dir / "report.md").read_text()
    # the figures name the base model they are of (its floats depend on the CPU that trained it)
    assert f"weights {out['base_model']['weights_sha256'][:12]}, trained with torch" in md
    for png in ("accuracy_per_version.png", "prm_scores.png", "retention.png"):
        assert (report_dir / png).stat().st_size > 1000 and f"({png})" in md
    page = (report_dir / "report.html").read_text()  # one page, the plots inside it
    assert page.count('src="data:image/png;base64,') == 3 and "<table>" in page
    (report_dir / "report.html").unlink()  # `cls-ray report` writes it again from the figures
    (report_dir / "retention.png").unlink()
    assert main(["report", *args]) == 0
    assert (report_dir / "report.html").read_text() == page
    assert out["failed_requests"] == 0 and out["new_users"] > 0
    assert out["feedback"]["corrected"] + out["feedback"]["rated"] > 0
    assert out["before"]["versions"] == ["base"]
    sleep = out["sleep"]
    assert sleep["promoted"]
    assert out["after"]["versions"] == [sleep["version"]]  # the broadcast reached serving
    cfg = load_config(None, overrides)
    assert registry_for(cfg).current().name == sleep["version"]
