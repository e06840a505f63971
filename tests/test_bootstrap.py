import json
import random

import pytest
import torch

from cls_ray.bootstrap import machine
from cls_ray.cli import main
from cls_ray.engine.hf import HFEngine
from cls_ray.model.examples import encode_examples, episode_pair
from cls_ray.model.loading import build_small_model, load_model_and_tokenizer, weights_checksum
from cls_ray.steps import compact_prompt, grounded_choices
from cls_ray.world.episodes import EpisodeSampler

pytestmark = pytest.mark.slow


def _eval_loss(model, tok, episodes):
    batch = encode_examples(tok, [episode_pair(e) for e in episodes], 160)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_bootstrap_saves_a_loadable_model_that_beats_an_untrained_one(tiny_cfg, tiny_stack):
    path = tiny_cfg.model_path
    metrics = json.loads((path / "bootstrap_metrics.json").read_text())
    assert metrics["loss_last"] < metrics["loss_first"] / 3
    assert "rival" in metrics["held_back_families"] and "rival" not in metrics["trained_families"]

    trained, tok = load_model_and_tokenizer(path)
    # The fingerprint two machines compare: the saved weights' own, and the kernels that made them.
    assert metrics["weights_sha256"] == weights_checksum(trained)
    assert metrics["machine"]["kernels"] == torch.backends.cpu.get_cpu_capability()
    torch.manual_seed(0)
    untrained = build_small_model(tiny_cfg.model.arch, tok).eval()
    world = tiny_stack.world
    rng = random.Random(123)
    episodes = [EpisodeSampler(world, world.trained_families).sample(rng) for _ in range(64)]
    trained_loss = _eval_loss(trained, tok, episodes)
    untrained_loss = _eval_loss(untrained, tok, episodes)
    assert trained_loss < 0.5 * untrained_loss

    def step_acc(model):
        eng = HFEngine(model, tok)
        outs = eng.generate(
            [compact_prompt(e.question, e.docs, e.steps) for e in episodes],
            choices=[grounded_choices(e.question, e.docs, e.steps) for e in episodes],
        )
        return sum(o.text == e.target for o, e in zip(outs, episodes, strict=True)) / len(episodes)

    assert step_acc(trained) > step_acc(untrained) + 0.2


def test_bootstrap_is_skipped_when_built(tiny_state, capsys):
    assert main(["bootstrap", *tiny_state["args"]]) == 0
    assert "already built" in capsys.readouterr().out


def test_loading_a_missing_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="cls-ray bootstrap"):
        load_model_and_tokenizer(tmp_path / "none")


def test_the_settings_that_choose_kernels_are_recorded(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # a capped run builds other floats: its metrics say so
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    assert machine()["settings"] == {"MKL_CBWR": "AVX2"}
