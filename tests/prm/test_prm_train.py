"""The PRM trained for real: Ray Train workers with DeepSpeed ZeRO on CPU (gloo), then scored,
evaluated and loaded by path."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from cls_ray.cli import main
from cls_ray.config import load_config
from cls_ray.prm.evaluate import auroc
from cls_ray.prm.labels import gold_and_corrupted
from cls_ray.prm.model import ProcessRewardModel
from cls_ray.prm.train import train_prm
from tests.helpers import TINY_OVERRIDES, TINY_PRM_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_training_on_ray_train_lowers_the_loss_and_beats_chance(tiny_prm, tiny_cfg, tiny_stack):
    meta = json.loads((tiny_prm / "prm.json").read_text())
    train = meta["train"]
    assert meta["workers"] == 2 and meta["zero_stage"] == 2 and train["step"] == meta["steps"]
    assert train["loss"] < train["first_loss"]
    prm = ProcessRewardModel.load(tiny_prm)
    world = tiny_stack.world
    held_out = gold_and_corrupted(world, world.questions("heldout", per_family=2), 3, seed=5)
    scores = prm.score_many([(e.prompt, e.completions, e.evidence) for e in held_out])
    flat = [
        (s, lab)
        for e, sc in zip(held_out, scores, strict=True)
        for s, lab in zip(sc, e.labels, strict=True)
    ]
    assert all(0.0 <= s <= 1.0 for s, _ in flat)
    # Held-out entities: better than chance at telling right steps from wrong ones.
    assert auroc([s for s, _ in flat], [lab == 1.0 for _, lab in flat]) > 0.6
    _trained_without_word_embeddings(prm)


def _trained_without_word_embeddings(prm: ProcessRewardModel) -> None:
    """`prm.freeze_embeddings` (the tests' PRM): the saved word embeddings are the encoder's
    own, bit for bit, and the layers above them were trained."""
    meta = json.loads((Path(prm.path) / "prm.json").read_text())
    assert meta["freeze_embeddings"]
    encoder = AutoModel.from_pretrained(meta["encoder"])
    mine = prm.model.encoder
    assert torch.equal(mine.get_input_embeddings().weight, encoder.get_input_embeddings().weight)
    first = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(mine.state_dict()[first], encoder.state_dict()[first])


def test_score_steps_takes_docs_per_step_or_for_all(tiny_prm):
    prm = ProcessRewardModel.load(tiny_prm)
    steps = ["the boss of Ann Lee is Bo Chan .", "the answer is Bo Chan ."]
    docs = ["the boss of Ann Lee is Bo Chan ."]
    a = prm.score_steps("what is the boss of Ann Lee ?", steps, docs)
    b = prm.score_steps("what is the boss of Ann Lee ?", steps, [docs, []])
    assert len(a) == 2 and a == pytest.approx(b)
    assert prm.score_steps("q ?", [], None) == [] and prm.r_tau([]) == 0.0
    with pytest.raises(FileNotFoundError, match="prm.json"):
        ProcessRewardModel.load(tiny_prm / "encoder")


def test_prm_eval_prints_its_figures_as_json_last(tiny_prm, tiny_state, capsys):
    args = tiny_state["args"] + [x for o in TINY_PRM_OVERRIDES for x in ("--set", o)]
    assert main(["prm", "eval", "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("step_f1", "first_error_accuracy", "auroc_tau"):
        assert 0.0 <= out[key] <= 1.0
    rows = {(r["n"], r["family"]) for r in out["best_of_n"]}
    assert rows == {(1, "trained"), (4, "trained"), (1, "held_back"), (4, "held_back")}
    assert all({"greedy", "majority", "prm"} <= set(r) for r in out["best_of_n"])
    assert (tiny_state["dir"] / "reports" / "prm_eval.json").exists()


def test_zero3_partitions_and_gathers_the_weights(tiny_state, tiny_stack, ray_local, tmp_path):
    """ZeRO-3 keeps each worker's share of the parameters; saving gathers them whole."""
    cfg = load_config(
        tiny_state["args"][1],
        [*TINY_OVERRIDES, *TINY_PRM_OVERRIDES, "prm.zero_stage=3", f"state_dir={tmp_path}"],
    )
    world = tiny_stack.world
    examples = gold_and_corrupted(world, world.questions("train", per_family=2), 2)
    metrics = train_prm(cfg, examples, tmp_path / "prm3", steps=6)
    assert metrics["step"] == 6 and metrics["path"].endswith("prm3")
    prm = ProcessRewardModel.load(tmp_path / "prm3")
    scores = prm.score_steps("what is the boss of Ann Lee ?", ["the answer is Bo ."], None)
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
    _trained_without_word_embeddings(prm)  # ZeRO-3 gathers the frozen weights too
