"""The model versions a generator replica holds, without Ray: real HF engines on a small model
built in code, full checkpoints with and without the checksum their trainer recorded."""

import pytest

from cls_ray.config import load_config
from cls_ray.config.schema import ArchConfig
from cls_ray.engine.hf import HFEngine
from cls_ray.model.loading import build_small_model, load_model_and_tokenizer
from cls_ray.model.tokenizer import build_world_tokenizer
from cls_ray.serving.versions import VersionSet, WeightsMismatch, stream_intact
from cls_ray.weight_sync import manifest_of
from tests.helpers import make_full_checkpoint

ARCH = ArchConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position=64)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    tok = build_world_tokenizer()
    build_small_model(ARCH, tok).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return load_config(None, [f"state_dir={root}", f"model.path={root / 'base'}"])


@pytest.fixture
def versions(cfg, tmp_path):
    return VersionSet(lambda v, p: HFEngine.from_config(cfg, v, p), tmp_path / "cache")


def test_a_checkpoint_becomes_current_and_the_previous_engines_stay_a_while(
    cfg, versions, tmp_path
):
    assert versions.current == "base" and versions.describe() == {
        "version": "base",
        "loaded_by": "storage",
    }
    sums = {}
    for i in range(1, 5):
        sums[f"v{i}"] = make_full_checkpoint(cfg.model_path, tmp_path / f"v{i}", seed=i)
        versions.switch(f"v{i}", str(tmp_path / f"v{i}"))
        assert versions.current == f"v{i}" and versions.engine().version == f"v{i}"
    # The base, the current one and the two most recent are kept for pinned sessions.
    assert set(versions.engines) == {"base", "v3", "v4"}
    assert versions.describe(checksum=True)["checksum"] == sums["v4"]
    # A session pinned to a version no longer held runs on the current one.
    assert versions.engine("v1").version == "v4" and versions.engine("v3").version == "v3"
    # Switching back to a held version loads nothing.
    held = versions.engines["v3"]
    versions.switch("v3", str(tmp_path / "v3"))
    assert versions.engines["v3"] is held and versions.current == "v3"


def test_weights_that_do_not_match_their_recorded_checksum_are_not_served(cfg, versions, tmp_path):
    make_full_checkpoint(cfg.model_path, tmp_path / "bad", checksum="0" * 64)
    with pytest.raises(WeightsMismatch, match="do not match the checksum its trainer recorded"):
        versions.switch("v9", str(tmp_path / "bad"))
    assert versions.current == "base" and not versions.holds("v9")


def test_a_stream_plan_names_ranks_and_refuses_another_architecture(cfg, versions, tmp_path):
    model, _ = load_model_and_tokenizer(cfg.model_path)
    same = manifest_of(model.state_dict())
    assert versions.sync_plan(same, "v1") == {"ranks": 1, "holds": False, "refuses": None}
    assert versions.sync_plan(None, "base")["ranks"] == 0  # it holds it: no second stream
    deeper = ARCH.model_copy(update={"num_layers": 2})
    other = manifest_of(build_small_model(deeper, build_world_tokenizer()).state_dict())
    assert "has no tensor" in versions.sync_plan(other, "v1")["refuses"]


def test_an_engine_received_over_a_stream_is_kept_and_reloading_restores_the_current(
    cfg, versions, tmp_path
):
    want = make_full_checkpoint(cfg.model_path, tmp_path / "v1", seed=3)
    model, tok = load_model_and_tokenizer(tmp_path / "v1")
    received = HFEngine(model, tok, version="v1")
    assert stream_intact({"stream": [want], "checksum": want}, want)
    assert not stream_intact({"stream": [want], "checksum": "0" * 64}, want)
    assert not stream_intact({"stream": ["0" * 64]}, want)
    versions.accept("v1", received, str(tmp_path / "v1"))
    # An HF engine received into a copy: the replica keeps serving until it is switched.
    assert versions.current == "base" and versions.loaded_by["v1"] == "stream"
    versions.switch("v1", str(tmp_path / "v1"))
    assert versions.engine() is received
    versions.reload_current()
    assert versions.engine() is not received and versions.loaded_by["v1"] == "storage"
    assert versions.engine().checksum() == want
