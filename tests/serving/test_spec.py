"""The Serve application spec a deploy applies and the KubeRay manifest embeds, from a config."""

from cls_ray.config import load_config
from cls_ray.registry import ModelVersion
from cls_ray.serving.names import APP_IMPORT_PATH, GENERATOR, INGRESS, RETRIEVER
from cls_ray.serving.spec import app_spec, version_config


def test_the_spec_carries_the_config_the_version_and_the_batch_sizes():
    cfg = load_config(
        None,
        [
            "serve.app_name=app1",
            "serve.generator.num_gpus=0.5",
            "serve.generator.autoscaling.max_replicas=5",
            "serve.generator.max_batch_size=24",
        ],
    )
    v = ModelVersion(id=3, name="v3", artifact_uri="/adapters/v3", kind="lora")
    spec = app_spec(cfg, v, session_batch_size=4)
    assert (spec["name"], spec["import_path"]) == ("app1", APP_IMPORT_PATH)
    assert spec["args"]["config"]["serve"]["generator"]["max_batch_size"] == 24
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {GENERATOR, INGRESS, RETRIEVER}
    gen = deps[GENERATOR]
    assert gen["user_config"] == {"version": "v3", "path": "/adapters/v3", "max_batch_size": 24}
    assert gen["autoscaling_config"]["max_replicas"] == 5
    assert gen["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5}
    assert deps[INGRESS]["user_config"] == {"session_batch_size": 4}
    assert deps[RETRIEVER]["user_config"] == {"max_batch_size": cfg.serve.retriever.max_batch_size}
    # The base model has no artifact to load: replicas build it from `model.path`.
    base = ModelVersion(id=0, name="base", artifact_uri="/models/base", kind="base")
    assert version_config(cfg, base)["path"] is None
