import multiprocessing
import os

import pytest

from cls_ray.registry import ModelRegistry


def test_versions_promote_and_roll_back_persistently(tmp_path):
    path = tmp_path / "registry.json"
    reg = ModelRegistry(path, base_uri="/models/base")
    assert reg.current().name == "base" and reg.current().kind == "base"
    v1 = reg.register("/adapters/1", "lora", metrics={"retention": 0.99})
    assert v1.name == "v1" and v1.status == "candidate" and v1.parent == "base"
    assert reg.current().name == "base"
    reg.promote("v1")
    reg.register("/adapters/2", "lora")
    reg.promote("v2")
    again = ModelRegistry(path)
    assert again.current().name == "v2" and again.get("v2").parent == "v1"
    assert again.rollback().name == "v1"
    assert again.get("v2").status == "rolled_back"
    assert ModelRegistry(path).current().name == "v1"
    assert ModelRegistry(path).rollback().name == "base"
    with pytest.raises(ValueError, match="nothing to roll back"):
        ModelRegistry(path).rollback()
    with pytest.raises(ValueError, match="rolled back"):
        ModelRegistry(path).promote("v2")
    with pytest.raises(KeyError):
        ModelRegistry(path).promote("v9")
    # Names are never reused, even after a rollback.
    assert ModelRegistry(path).register("/adapters/3", "full").name == "v3"
    assert not list(tmp_path.glob("*.tmp"))


def _register_many(path, n):
    reg = ModelRegistry(path)
    return [reg.register(f"/adapters/{os.getpid()}-{i}", "lora").name for i in range(n)]


def test_writers_in_separate_processes_lose_nothing(tmp_path):
    path = tmp_path / "registry.json"
    ModelRegistry(path, base_uri="/models/base")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        names = [n for got in pool.starmap(_register_many, [(path, 15)] * 3) for n in got]
    assert len(set(names)) == 45
    assert {v["name"] for v in ModelRegistry(path).list()} == {"base", *names}
