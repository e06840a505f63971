"""A version is loaded only as it was saved: an adapter or a full checkpoint whose files differ
from the checksum recorded when it was saved, or that records none, is refused by the engine,
naming the version and the folder. Small models built in code, real PEFT adapters."""

import json
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model

from cls_ray.config import load_config
from cls_ray.config.schema import ArchConfig
from cls_ray.engine.hf import HFEngine
from cls_ray.model.integrity import (
    FILES_KEY,
    UnverifiedVersion,
    files_checksum,
    record_files_checksum,
)
from cls_ray.model.loading import build_small_model, load_model_and_tokenizer, save_version
from cls_ray.model.tokenizer import build_world_tokenizer
from tests.helpers import make_full_checkpoint

ARCH = ArchConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position=64)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    tok = build_world_tokenizer()
    build_small_model(ARCH, tok).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return load_config(None, [f"state_dir={root}", f"model.path={root / 'base'}"])


def _adapter(cfg, out):
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(cfg.model_path)
    lora = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False)
    )
    return save_version(lora, out, {"method": "test"})


def test_the_checksum_covers_every_file_but_the_record(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "sub" / "adapter_config.json").write_text("{}")
    first = record_files_checksum(tmp_path)
    assert json.loads((tmp_path / "consolidation.json").read_text())[FILES_KEY] == first
    assert files_checksum(tmp_path) == first  # the record itself is not hashed
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weightz")
    assert files_checksum(tmp_path) != first
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "sub" / "adapter_config.json").rename(tmp_path / "adapter_config.json")
    assert files_checksum(tmp_path) != first  # names count, not only bytes


def test_an_adapter_saved_as_consolidation_saves_it_loads(cfg, tmp_path):
    out = _adapter(cfg, tmp_path / "v1")
    meta = json.loads((out / "consolidation.json").read_text())
    assert meta["method"] == "test" and meta[FILES_KEY] == files_checksum(out)
    assert HFEngine.from_config(cfg, "v1", out).version == "v1"


def test_a_changed_adapter_is_refused_naming_the_version_and_folder(cfg, tmp_path):
    out = _adapter(cfg, tmp_path / "v1")
    weights = out / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(UnverifiedVersion, match=f"version v1: the files at {re.escape(str(out))} "):
        HFEngine.from_config(cfg, "v1", out)


def test_an_adapter_or_checkpoint_without_a_recorded_checksum_is_refused(cfg, tmp_path):
    out = _adapter(cfg, tmp_path / "v1")
    (out / "consolidation.json").unlink()
    with pytest.raises(UnverifiedVersion, match="version v1: .*consolidation.json records no"):
        HFEngine.from_config(cfg, "v1", out)
    make_full_checkpoint(cfg.model_path, tmp_path / "v2")
    assert HFEngine.from_config(cfg, "v2", tmp_path / "v2").version == "v2"
    record = tmp_path / "v2" / "consolidation.json"
    meta = json.loads(record.read_text())
    del meta[FILES_KEY]
    record.write_text(json.dumps(meta))
    with pytest.raises(UnverifiedVersion, match="version v2"):
        HFEngine.from_config(cfg, "v2", tmp_path / "v2")
    assert HFEngine.from_config(cfg).version == "base"  # the base model is not a version folder
