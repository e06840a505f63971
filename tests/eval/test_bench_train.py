"""`cls-ray bench train`: the same SFT through Ray Train + DeepSpeed (ZeRO 0, 2, 3) and through
TRL's SFTTrainer, with throughput and per-worker memory figures."""

import json

import pytest

from cls_ray.cli import main
from tests.helpers import TINY_OVERRIDES, set_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_bench_train_runs_both_trainers_and_prints_the_figures(
    tiny_state, ray_local, tmp_path, capsys
):
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        "consolidate.batch_size=4",
        "consolidate.cpus_per_worker=0.5",
    ]
    args = set_args(overrides)
    assert main(["bench", "train", "--steps", "6", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples_per_s_ray"] > 0 and out["samples_per_s_trl"] > 0
    assert out["ratio"] == pytest.approx(out["samples_per_s_ray"] / out["samples_per_s_trl"])
    assert set(out["peak_rss_mb_per_worker"]) == {"0", "2", "3"}
    assert all(v > 50 for v in out["peak_rss_mb_per_worker"].values())
    assert out["global_batch"] == 8 and out["trl"]["samples"] == 6 * 8
    for run in out["ray"].values():
        assert run["loss"] == run["loss"]  # a number, not NaN
