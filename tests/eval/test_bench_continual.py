"""`cls-ray bench continual`'s figures: the accuracy matrix read as forgetting and transfer, the
KL's correlation with forgetting, the heat-map, and a clear error without a skill stream."""

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from cls_ray.cli import main
from cls_ray.config import Config
from cls_ray.consolidate.skills import SkillLedger
from cls_ray.eval.bench_continual import Unacked, arms_of, correlation, summarize
from cls_ray.eval.plots import plot_bench_continual
from cls_ray.registry import ModelRegistry
from tests.helpers import OPEN_GATE, TINY_OVERRIDES, set_args

# rows: before, after sleep 1, 2, 3; columns: base, skill 1, 2, 3
MATRIX = [
    [0.95, 0.10, 0.05, 0.00],
    [0.94, 0.90, 0.05, 0.00],
    [0.93, 0.80, 0.85, 0.05],
    [0.95, 0.84, 0.80, 0.90],
]


def test_the_matrix_reads_as_forgetting_from_the_best_and_backward_transfer():
    got = summarize(MATRIX, [0, 1, 2, 3])
    assert got["final_average"] == pytest.approx((0.95 + 0.84 + 0.80 + 0.90) / 4)
    # skill 1: best 0.90 right after its sleep, 0.84 at the end; skill 2: 0.85 -> 0.80; base:
    # best 0.95 (before and at the end): no loss.
    assert got["max_forgetting"] == pytest.approx(0.06)
    assert got["backward_transfer"] == pytest.approx(((0.84 - 0.90) + (0.80 - 0.85)) / 2)
    # A skill whose sleep was refused (learned "after the end") counts in no figure but the
    # average: skill 3 here.
    refused = summarize(MATRIX, [0, 1, 2, 4])
    assert refused["max_forgetting"] == pytest.approx(0.06)
    assert refused["backward_transfer"] == pytest.approx(((0.84 - 0.90) + (0.80 - 0.85)) / 2)


def test_the_kl_correlation_is_pearsons_r_and_nan_without_evidence():
    assert correlation([0.1, 0.2, 0.3, 0.4], [0.0, 0.01, 0.02, 0.03]) == pytest.approx(1.0)
    assert correlation([0.1, 0.2, 0.3], [0.03, 0.02, 0.01]) == pytest.approx(-1.0)
    assert math.isnan(correlation([0.1, None, 0.3], [0.0, 0.1, 0.2]))  # 2 pairs: no figure
    assert math.isnan(correlation([0.1, 0.1, 0.1], [0.0, 0.1, 0.2]))  # no spread


def test_the_heat_map_has_one_panel_per_arm(tmp_path):
    arm = {"columns": ["base", "s1", "s2", "s3"], "matrix": MATRIX} | summarize(
        MATRIX, [0, 1, 2, 3]
    )
    result = {"arms": [{**arm, "arm": "continue"}, {**arm, "arm": "base"}]}
    png = plot_bench_continual(result, tmp_path / "continual.png")
    img = Image.open(png).convert("RGB")
    assert img.width > 2 * img.height * 0.9  # two panels side by side
    # viridis' yellow (high accuracy) and purple (low) are both drawn
    colours = img.getcolors(img.width * img.height)
    yellowish = sum(n for n, (r, g, b) in colours if r > 200 and g > 200 and b < 100)
    purplish = sum(n for n, (r, g, b) in colours if r > 50 and g < 30 and b > 70)
    assert yellowish > 500 and purplish > 500


def test_without_a_skill_stream_it_says_what_to_set(tmp_path, capsys):
    with pytest.raises(SystemExit, match="world.held_back_sequence"):
        main(["bench", "continual", "--set", f"state_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="unknown arm"):
        main(
            [
                "bench",
                "continual",
                "--arms",
                "stacked",
                "--set",
                f"state_dir={tmp_path}",
                "--set",
                "world.held_back_sequence=[rival,spouse]",
            ]
        )


@pytest.mark.slow
@pytest.mark.ray
def test_two_sleeps_over_a_skill_stream_on_a_copy_of_the_state(
    tiny_prm, ray_local, tmp_path, capsys
):
    """A tiny world holding back rival, then spouse: bootstrap, ingest, then the bench's two
    sleeps for the `continue` arm. The second sleep starts from the first's version, the ledger
    knows both skills, and the user's own registry is untouched."""
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        "world.held_back_sequence=[rival,spouse]",
        "model.bootstrap.steps=40",  # the path through two sleeps, not what the model learns
        "model.bootstrap.warmup=5",
        "store.collection_prefix=stream",
        f"prm.path={tiny_prm}",
        "consolidate.steps=10",
        "consolidate.batch_size=8",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.new_per_family=2",
        "consolidate.eval_per_family=2",
        "consolidate.sample_n=2",
        *OPEN_GATE,
    ]
    args = ["-q", *set_args(overrides)]
    assert main(["bootstrap", *args]) == 0
    assert main(["ingest", "--world", "--no-ray", *args]) == 0
    capsys.readouterr()
    assert main(["bench", "continual", "--json", "--arms", "continue", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["sequence"] == ["rival", "spouse"] and out["columns"] == ["base", "rival", "spouse"]
    assert len(out["matrix"]) == 3 and all(len(r) == 3 for r in out["matrix"])
    assert all(0.0 <= v <= 1.0 for r in out["matrix"] for v in r)
    (arm,) = out["arms"]
    first, second = arm["sleeps"]
    assert first["promoted"] and second["promoted"], arm["sleeps"]  # the gate is open here
    sandbox = tmp_path / "continual-continue"
    v2 = ModelRegistry(sandbox / "registry.json").get(second["version"])
    meta = json.loads(Path(v2.artifact_uri, "consolidation.json").read_text())
    assert meta["started_from"] == first["version"] and meta["compose"] == "continue"
    assert [s.name for s in SkillLedger(sandbox / "skills.json").skills()] == [
        first["version"],
        second["version"],
    ]
    mine = ModelRegistry(tmp_path / "registry.json").list()  # the user's state: untouched
    assert all(v["name"] == "base" for v in mine) and not (tmp_path / "adapters").exists()
    assert (tmp_path / "reports" / "bench_continual.png").stat().st_size > 1000


def test_the_full_arm_trains_every_weight_under_zero3_at_a_tenth_of_the_rate():
    arms = arms_of(Config.model_validate({"consolidate": {"lr": 2e-3}}))
    assert arms["continue"] == {"consolidate.compose": "continue"}
    assert arms["base"] == {"consolidate.compose": "base"}
    full = arms["full"]
    assert full["consolidate.weights"] == "full" and full["consolidate.zero_stage"] == 3
    assert full["consolidate.compose"] == "continue"
    assert full["consolidate.lr"] == pytest.approx(2e-4)


def test_a_refused_sleeps_sessions_go_to_the_next_sleep_with_its_own():
    """As the buffer does: a refused sleep acknowledges nothing, so the next sleep learns from
    (and is measured on) both skills; a promoted one takes them all off the lease."""
    leased = Unacked()
    leased.add("partner", [{"id": "p1"}, {"id": "p2"}])
    assert leased.settle(promoted=False) == []  # refused: still held
    leased.add("twin", [{"id": "t1"}])
    assert leased.skills == ["partner", "twin"]
    assert [s["id"] for s in leased.sessions] == ["p1", "p2", "t1"]
    assert leased.settle(promoted=True) == ["partner", "twin"]
    assert leased.skills == [] and leased.sessions == []
    leased.add("next", [{"id": "n1"}])
    assert leased.settle(promoted=True) == ["next"]
