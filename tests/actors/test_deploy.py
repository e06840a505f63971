"""Promote and rollback push a version to serving before the registry names it: a push that
fails leaves the registry as it was and the previous version deployed again. Serve itself is
not started: `deploy` is replaced by one that records what it was asked to deploy and fails for
one version (a replica refusing it, which a test cannot otherwise cause)."""

import pytest

import actors.deploy
from actors.deploy import DeployError, promote, rollback
from actors.registry import ModelRegistryActor, RegistryClient
from cls_ray.config import load_config
from cls_ray.registry import ModelRegistry, registry_for


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(None, [f"state_dir={tmp_path}"])
    reg = registry_for(cfg)
    for i in (1, 2):
        reg.promote(reg.register(f"/adapters/{i}", "lora").name)
    reg.register("/adapters/3", "lora")
    return cfg


class Calls(list):
    """(version deployed, the registry's current version when it was), per deploy call."""

    fail: str | None  # the version a replica refuses


@pytest.fixture
def pushes(cfg, monkeypatch):
    calls = Calls()
    calls.fail = None

    def deploy(cfg_, v, *args, **kwargs):
        calls.append((v.name, registry_for(cfg).current().name))
        if v.name == calls.fail:
            raise DeployError(f"deploying on {v.name} failed: a replica refused it")
        return "http://test"

    monkeypatch.setattr(actors.deploy, "deploy", deploy)
    return calls


def test_a_promote_that_fails_to_deploy_keeps_the_registry_and_redeploys(cfg, pushes):
    pushes.fail = "v3"
    with pytest.raises(DeployError, match="v3"):
        promote(cfg, "v3", "gate passed")
    assert registry_for(cfg).current().name == "v2"
    assert registry_for(cfg).get("v3").status == "candidate"
    assert pushes == [("v3", "v2"), ("v2", "v2")]
    pushes.fail = None
    assert promote(cfg, "v3", "gate passed").name == "v3"
    assert pushes[-1] == ("v3", "v2"), "the registry changed before serving had the version"
    assert registry_for(cfg).current().name == "v3"


def test_a_rollback_deploys_first_and_reverts_when_the_deploy_fails(cfg, pushes):
    pushes.fail = "v1"
    with pytest.raises(DeployError, match="v1"):
        rollback(cfg, "bad answers")
    assert registry_for(cfg).current().name == "v2"
    assert registry_for(cfg).get("v2").status == "promoted"
    assert pushes == [("v1", "v2"), ("v2", "v2")]
    pushes.fail = None
    assert rollback(cfg, "bad answers", request_id="r1").name == "v1"
    assert pushes[-1] == ("v1", "v2"), "the registry rolled back before serving did"
    # The same request again (a retry) rolls back nothing more and keeps v1 deployed.
    assert rollback(cfg, "bad answers", request_id="r1").name == "v1"
    assert pushes[-1] == ("v1", "v1") and registry_for(cfg).current().name == "v1"


def test_a_registry_change_that_fails_after_the_deploy_redeploys_the_previous(cfg, pushes):
    class FullDisk(ModelRegistry):
        def promote(self, name, reason="", request_id=None):
            raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        promote(cfg, "v3", registry=FullDisk(cfg.state_path / "registry.json"))
    assert pushes == [("v3", "v2"), ("v2", "v2")] and registry_for(cfg).current().name == "v2"


def test_a_rolled_back_version_is_refused_before_it_is_deployed(cfg, pushes):
    registry_for(cfg).rollback()
    with pytest.raises(ValueError, match="v2 was rolled back"):
        promote(cfg, "v2")
    assert pushes == [] and registry_for(cfg).current().name == "v1"


@pytest.mark.ray
def test_the_registry_actor_behind_a_client_promotes_and_rolls_back(cfg, pushes, ray_local):
    ray = ray_local
    handle = ray.remote(ModelRegistryActor).options(max_restarts=-1, max_task_retries=-1)
    actor = handle.remote(str(cfg.state_path / "registry.json"), str(cfg.model_path))
    client = RegistryClient(actor, timeout_s=60)
    try:
        assert client.current().name == "v2" and client.get("v3").status == "candidate"
        assert promote(cfg, "v3", "gate passed", registry=client).name == "v3"
        assert client.rollback_target().name == "v2"
        assert rollback(cfg, request_id="r1", registry=client).name == "v2"
        ray.kill(actor, no_restart=False)  # the restarted actor reads the file
        assert client.rollback(request_id="r1").name == "v2"
        assert client.current().name == "v2" and len(client.list()) == 4
        assert pushes == [("v3", "v2"), ("v2", "v3")]
    finally:
        ray.kill(actor)
