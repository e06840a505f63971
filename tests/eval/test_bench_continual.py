"""`cls-ray bench continual`'s figures: the accuracy matrix read as forgetting and transfer, the
KL's correlation with forgetting, the heat-map, and a clear error without a skill stream."""

import math

import pytest
from PIL import Image

from cls_ray.cli import main
from cls_ray.eval.bench_continual import correlation, forgetting_of, summarize
from cls_ray.eval.plots import plot_bench_continual

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
    # Over one sleep: sleep 2 cost skill 1 0.10, base 0.01.
    assert forgetting_of(MATRIX[1], MATRIX[2], 2) == pytest.approx(0.10)
    assert forgetting_of(MATRIX[0], MATRIX[1], 1) == pytest.approx(0.01)


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
