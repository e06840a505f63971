import json
import multiprocessing
import os

import pytest

from cls_ray import registry
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
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind


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


def _two_promoted(path):
    reg = ModelRegistry(path, base_uri="/models/base")
    for i in (1, 2):
        reg.promote(reg.register(f"/adapters/{i}", "lora").name)
    return reg


def test_a_repeated_request_is_applied_once(tmp_path):
    """A caller that retries (Ray, after the registry actor crashed) gets the first result."""
    path = tmp_path / "registry.json"
    reg = _two_promoted(path)
    again = ModelRegistry(path)  # what the restarted actor reads: the file
    assert reg.rollback(request_id="r1").name == "v1"
    assert again.rollback(request_id="r1").name == "v1"
    assert again.current().name == "v1", "a retried rollback rolled back twice"
    v3 = reg.register("/adapters/3", "lora", request_id="reg-3")
    assert again.register("/adapters/3", "lora", request_id="reg-3") == v3
    assert [v["name"] for v in again.list()] == ["base", "v1", "v2", "v3"]
    assert reg.promote("v3", request_id="p3").status == again.promote("v3", request_id="p3").status
    assert ModelRegistry(path).history == ["base", "v1", "v3"]
    with pytest.raises(ValueError, match="request_id 'p3' was already used for promote"):
        reg.rollback(request_id="p3")
    assert reg.rollback(request_id="r2").name == "v1"  # a new request is a new rollback


def test_applied_requests_are_bounded_and_old_files_still_read(tmp_path, monkeypatch):
    path = tmp_path / "registry.json"
    path.write_text(  # a registry written before request ids
        json.dumps(
            {
                "versions": [
                    {"id": 0, "name": "base", "artifact_uri": "/b", "kind": "base"},
                ],
                "history": ["base"],
            }
        )
    )
    reg = ModelRegistry(path)
    assert reg.current().name == "base"
    monkeypatch.setattr(registry, "REQUESTS_KEPT", 3)
    for i in range(5):
        reg.register(f"/adapters/{i}", "lora", request_id=f"r{i}")
    assert list(json.loads(path.read_text())["requests"]) == ["r2", "r3", "r4"]


def test_rollback_target_names_the_rollback_and_changes_nothing(tmp_path):
    path = tmp_path / "registry.json"
    reg = _two_promoted(path)
    before = path.read_bytes()
    assert reg.rollback_target().name == "v1"
    assert path.read_bytes() == before and reg.current().name == "v2"
    assert reg.rollback(request_id="r1").name == "v1"
    assert reg.rollback_target(request_id="r1").name == "v1"  # what r1 made current
    assert reg.rollback_target().name == "base"
    reg.rollback()
    with pytest.raises(ValueError, match="nothing to roll back"):
        reg.rollback_target()
