"""The cluster path's files: the configs load through the schema, the KubeRay manifests are the
ones the code builds from configs/cluster.yaml (a drift fails here), Kubernetes core objects and
every pod template validate against the Kubernetes schemas, the KubeRay objects carry the fields
cls-ray relies on, the `ray up` YAML validates against Ray's own schema, and no secret from the
environment ever lands in a manifest."""

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from cls_ray.cli import main
from cls_ray.cluster import manifests, render, render_text
from cls_ray.config import Config, load_config
from cls_ray.serving.names import APP_IMPORT_PATH
from tests.helpers import ROOT

CLUSTER_CONFIG = "configs/cluster.yaml"
K8S_VERSION = "1.32"


def _cfg():
    return load_config(ROOT / CLUSTER_CONFIG)


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "cluster" / "kuberay" / name).read_text()) if d]


@pytest.mark.parametrize("name", ["cluster.yaml", "gpu-single.yaml", "local.yaml"])
def test_every_config_loads_through_the_schema(name):
    cfg = load_config(ROOT / "configs" / name)
    if name != "local.yaml":
        assert cfg.engine.kind == "vllm" and cfg.consolidate.use_gpu
        assert cfg.consolidate.zero_stage == 3 and cfg.serve.generator.num_gpus > 0


def test_the_committed_manifests_are_what_the_code_builds_from_the_cluster_config():
    built = manifests(_cfg(), CLUSTER_CONFIG)
    committed = sorted(p.name for p in (ROOT / "cluster" / "kuberay").glob("*.yaml"))
    assert committed == sorted(built)
    for name, docs in built.items():
        text = (ROOT / "cluster" / "kuberay" / name).read_text()
        assert text == render_text(docs, CLUSTER_CONFIG), (
            f"cluster/kuberay/{name} drifted from {CLUSTER_CONFIG}: run "
            f"`cls-ray cluster render --config {CLUSTER_CONFIG}`"
        )


def test_a_changed_config_changes_the_rayservice(tmp_path):
    """The drift check has teeth: a different autoscaling bound renders a different file."""
    cfg = load_config(ROOT / CLUSTER_CONFIG, ["serve.generator.autoscaling.max_replicas=3"])
    (out,) = [p for p in render(cfg, CLUSTER_CONFIG, tmp_path) if p.name == "rayservice.yaml"]
    assert out.read_text() != (ROOT / "cluster" / "kuberay" / "rayservice.yaml").read_text()
    serve = yaml.safe_load(yaml.safe_load(out.read_text())["spec"]["serveConfigV2"])
    (gen,) = [d for d in serve["applications"][0]["deployments"] if d["name"] == "generator"]
    assert gen["autoscaling_config"]["max_replicas"] == 3


def _pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterConfig") or doc["spec"].get("rayClusterSpec")
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def test_kubernetes_objects_and_pod_templates_validate_against_the_schemas():
    seen = set()
    for path in sorted((ROOT / "cluster" / "kuberay").glob("*.yaml")):
        for doc in _docs(path.name):
            seen.add(doc["kind"])
            if doc["apiVersion"].startswith("ray.io/"):
                for t in _pod_templates(doc):
                    obj = {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": "t"},
                        "template": t,
                    }
                    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert {"RayService", "RayJob", "CronJob", "PersistentVolumeClaim", "NetworkPolicy"} <= seen


def test_a_broken_pod_template_is_refused_by_the_validator():
    (svc,) = _docs("rayservice.yaml")
    t = _pod_templates(svc)[1]
    t["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"not": "a quantity"}
    obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": t}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_rayservice_carries_what_cls_ray_relies_on():
    cfg = _cfg()
    (svc,) = _docs("rayservice.yaml")
    assert svc["apiVersion"] == "ray.io/v1" and svc["metadata"]["name"] == cfg.serve.app_name
    serve = ServeDeploySchema.model_validate(yaml.safe_load(svc["spec"]["serveConfigV2"]))
    (app,) = serve.applications
    assert app.import_path == APP_IMPORT_PATH == "actors.serve.app:app_from_args"
    assert Config.model_validate(app.args["config"]) == cfg  # the whole config, unchanged
    assert serve.http_options.port == cfg.serve.port
    deps = {d.name: d for d in app.deployments}
    gen = deps["generator"]
    assert gen.autoscaling_config["max_replicas"] == cfg.serve.generator.autoscaling.max_replicas
    assert gen.ray_actor_options.num_gpus == cfg.serve.generator.num_gpus
    assert gen.user_config["version"] == "current"  # the registry's, on any new cluster
    cluster = svc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert groups["gpu"]["maxReplicas"] >= cfg.serve.generator.autoscaling.max_replicas
    (claim,) = _docs("storage.yaml")
    for t in _pod_templates(svc):
        c = t["spec"]["containers"][0]
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/mnt/cls-ray"}
        assert cfg.state_dir.startswith("/mnt/cls-ray/") and cfg.model.path.startswith("/mnt/")
        vols = {v["persistentVolumeClaim"]["claimName"] for v in t["spec"]["volumes"]}
        assert vols == {claim["metadata"]["name"]}
        env = {e["name"] for e in c["env"]}
        assert {"MILVUS_URI", "MILVUS_TOKEN", cfg.serve.admin_key_env} <= env


def test_jobs_submit_the_cli_with_the_cluster_config():
    cfg = _cfg()
    (cron,) = _docs("sleep-cronjob.yaml")
    cmd = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"http://{cfg.serve.app_name}-head-svc:8265" in cmd[-1]
    assert cmd[-1].endswith(f"-- python -m cls_ray.cli sleep --config {CLUSTER_CONFIG}")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (job,) = _docs("prm-rayjob.yaml")
    assert job["spec"]["entrypoint"] == f"python -m cls_ray.cli prm train --config {CLUSTER_CONFIG}"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def _admits(policy: dict, labels: dict, port: int) -> bool:
    """Whether a pod with `labels` (namespace unlabelled) may reach `port` of the policy's pods."""
    for rule in policy["spec"]["ingress"]:
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule["from"]:
            ns = peer.get("namespaceSelector")
            if ns is not None and ns.get("matchLabels") and "podSelector" not in peer:
                continue  # a labelled namespace: not ours
            want = peer.get("podSelector", {}).get("matchLabels", {})
            if all(labels.get(k) == v for k, v in want.items()):
                return True
    return False


def test_the_network_policy_admits_clients_to_serve_and_only_operators_to_the_dashboard():
    cfg = _cfg()
    (policy,) = _docs("networkpolicy.yaml")
    (svc,) = _docs("rayservice.yaml")
    (cron,) = _docs("sleep-cronjob.yaml")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    pods = [t["metadata"]["labels"] for t in _pod_templates(svc)]
    assert pods and all(selected.items() <= labels.items() for labels in pods)  # every Ray pod
    submitter = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    client, stranger = {"cls-ray/client": "true"}, {"app": "something-else"}
    port, dashboard = cfg.serve.port, 8265
    assert _admits(policy, client, port) and not _admits(policy, client, dashboard)
    assert _admits(policy, submitter, dashboard) and not _admits(policy, submitter, 6379)
    assert not any(_admits(policy, stranger, p) for p in (port, dashboard, 6379, 10001))
    assert all(_admits(policy, pods[0], p) for p in (port, dashboard, 6379, 10001))
    kuberay = {"app.kubernetes.io/name": "kuberay-operator"}
    assert _admits(policy, kuberay, dashboard) and not _admits(policy, kuberay, port)
    # Prometheus scrapes each node's metrics port, and only that.
    prometheus = {"cls-ray/monitoring": "true"}
    assert _admits(policy, prometheus, 8080) and not _admits(policy, prometheus, dashboard)
    cluster = svc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert all(g["rayStartParams"]["metrics-export-port"] == "8080" for g in groups)
    for t in _pod_templates(svc):
        assert t["metadata"]["annotations"]["prometheus.io/port"] == "8080"
        ports = {p["name"]: p["containerPort"] for p in t["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080
    # On VMs the dashboard listens on loopback only (reached through `ray dashboard`'s tunnel).
    head = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    start = " ".join(head["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def test_no_secret_from_the_environment_lands_in_a_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("MILVUS_TOKEN", "root:s3cret-token")
    monkeypatch.setenv("MILVUS_URI", "http://milvus.internal:19530")
    cfg = load_config(ROOT / CLUSTER_CONFIG)
    for p in render(cfg, CLUSTER_CONFIG, tmp_path):
        text = p.read_text()
        assert "s3cret-token" not in text and "milvus.internal" not in text
    assert "${MILVUS_TOKEN}" in (tmp_path / "rayservice.yaml").read_text()


def test_the_ray_up_yaml_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    conf = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    jsonschema.validate(conf, schema)
    types = conf["available_node_types"]
    assert conf["head_node_type"] in types
    assert types[conf["head_node_type"]]["resources"]["CPU"] == 0
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > 0 for t in types.values())
    bad = {**conf, "available_node_types": {"head": {"node_config": {}}}}  # no resources
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("name,distributed", [("standalone", False), ("distributed", True)])
def test_milvus_values_parse_and_match_what_the_config_reads(name, distributed):
    values = yaml.safe_load((ROOT / "cluster" / "milvus" / f"values-{name}.yaml").read_text())
    assert values["cluster"]["enabled"] is distributed
    assert values["service"]["port"] == 19530
    auth = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    assert auth["common"]["security"]["authorizationEnabled"] is True  # hence MILVUS_TOKEN
    assert _cfg().store.uri == "${MILVUS_URI}" and _cfg().store.token == "${MILVUS_TOKEN}"


def test_cluster_render_writes_and_check_names_the_drift(tmp_path, capsys):
    args = ["cluster", "render", "--config", str(ROOT / CLUSTER_CONFIG), "--out", str(tmp_path)]
    assert main([*args, "--check"]) == 1
    assert "rayservice.yaml: differs from what" in capsys.readouterr().err
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    (tmp_path / "storage.yaml").write_text("# edited by hand\n")
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "storage.yaml: differs" in err and "rayservice.yaml" not in err
