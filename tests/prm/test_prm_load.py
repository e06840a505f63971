"""A trained PRM folder is data: loading it reads tensors, and a `head.pt` that pickles code is
refused without running it. A tiny BERT encoder built in code."""

import pickle
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from cls_ray.model.tokenizer import build_world_tokenizer
from cls_ray.prm.model import ProcessRewardModel, StepPRM, save_prm


def _touch(path: str) -> dict:
    Path(path).touch()
    return {}


class RunsCode:
    """Unpickling it calls `_touch`: what a malicious head.pt would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


@pytest.fixture
def prm_dir(tmp_path):
    tok = build_world_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=16,
    )
    return save_prm(StepPRM(BertModel(cfg)), tok, tmp_path / "prm", {"max_length": 64})


def test_a_saved_prm_loads_its_head(prm_dir):
    prm = ProcessRewardModel.load(prm_dir)
    saved = torch.load(prm_dir / "head.pt", weights_only=True)
    assert torch.equal(prm.model.head.weight, saved["weight"])


def test_a_head_that_pickles_code_is_refused_without_running_it(prm_dir, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"weight": torch.zeros(1, 8), "bias": RunsCode(marker)}, prm_dir / "head.pt")
    with pytest.raises(pickle.UnpicklingError):
        ProcessRewardModel.load(prm_dir)
    assert not marker.exists()
