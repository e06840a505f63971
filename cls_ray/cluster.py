"""Cluster manifests generated from a cls-ray config.

The Serve config of the KubeRay `RayService` is the one `cls_ray.serving.spec.app_spec` builds for
`cls-ray up` (the same import path, the whole cls-ray config as its arguments, the generator's
autoscaling and resources), so the cluster serves exactly what the code deploys locally;
`cls-ray cluster render` writes it and a test fails when the committed manifests drift from it.

Kubernetes objects: the `RayService` (a head pod and autoscaling GPU and CPU worker groups,
every pod mounting the shared state volume and reading the Milvus URI/token and the admin key
from a Secret), a `CronJob` that submits the nightly consolidation to the service's cluster with
`ray job submit` (the job promotes through that cluster's Serve controller, so it has to run
there), a `RayJob` that trains the PRM on its own short-lived cluster, and the shared-state
`PersistentVolumeClaim`, and the `NetworkPolicy` that decides who reaches the pods (the
processes inside bind 0.0.0.0, so the policy is the boundary: TLS goes in front, at the
ingress that clients reach).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from cls_ray.config import Config
from cls_ray.dashboard import dashboard
from cls_ray.registry import ModelVersion
from cls_ray.serving.spec import app_spec

IMAGE = "cls-ray:0.1.0"  # built from cluster/Dockerfile; override with --image
RAY_VERSION = "2.58.0"
SECRET = "cls-ray-secrets"
STATE_CLAIM = "cls-ray-state"
MOUNT = "/mnt/cls-ray"
WORKDIR = "/app"  # where the image holds the project (configs/ included)

# Environment the processes read `${VAR}` config values and the admin key from.
SECRET_ENV = {
    "MILVUS_URI": "milvus-uri",
    "MILVUS_TOKEN": "milvus-token",
    "CLS_RAY_ADMIN_KEY": "admin-key",
}


def serve_config(cfg: Config) -> dict:
    """The Serve deploy config (`serve deploy` / `serveConfigV2`) of `cfg`'s application. The
    generator declares the version `current`: each replica serves what the registry (on the
    shared state volume) says is current, so a new cluster of an upgrade, or a restarted one,
    comes back on the promoted version; promotions and rollbacks on the running cluster push
    explicit versions to the replicas (see `actors.deploy.promote`)."""
    current = ModelVersion(id=0, name="current", artifact_uri=str(cfg.model_path), kind="base")
    return {
        "http_options": {
            "host": "0.0.0.0",  # inside the pod; the NetworkPolicy decides who reaches it
            "port": cfg.serve.port,
            "request_timeout_s": cfg.serve.limits.request_timeout_s,
        },
        "applications": [app_spec(cfg, current)],
    }


def _env() -> list[dict]:
    return [
        {
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}},
        }
        for var, key in SECRET_ENV.items()
    ]


def _container(name: str, image: str, resources: dict, ports: list[dict] | None = None) -> dict:
    c = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": WORKDIR,
        "env": _env(),
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [{"name": "state", "mountPath": MOUNT}],
    }
    if ports:
        c["ports"] = ports
    return c


# Labels on every pod of an app's clusters, and on who may reach them (`network_policy`).
APP_LABEL = "cls-ray/app"
CLIENT_LABEL = "cls-ray/client"  # may call the Serve HTTP port
OPERATOR_LABEL = "cls-ray/operator"  # may submit jobs to the dashboard (remote code execution)
DASHBOARD_PORT = 8265
METRICS_PORT = 8080  # each node's Prometheus endpoint (`ray start --metrics-export-port`)
MONITORING_LABEL = "cls-ray/monitoring"  # may scrape the metrics port (Prometheus)
DASHBOARD_AGENT_PORT = 52365


def _labels(cfg: Config) -> dict:
    return {"app.kubernetes.io/part-of": "cls-ray", APP_LABEL: cfg.serve.app_name}


def _pod(container: dict, labels: dict) -> dict:
    container.setdefault("ports", []).append({"containerPort": METRICS_PORT, "name": "metrics"})
    return {
        "metadata": {
            "labels": dict(labels),
            # Prometheus' annotation-based discovery; with the operator, a PodMonitor on the
            # `metrics` port (cluster/README.md) does the same.
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "containers": [container],
            "volumes": [
                {"name": "state", "persistentVolumeClaim": {"claimName": STATE_CLAIM}},
            ],
        },
    }


def ray_cluster_spec(cfg: Config, image: str) -> dict:
    """A RayCluster spec: a head that runs no work (the Serve controller, the state actors and
    the dashboard only), GPU workers for generator replicas and training, CPU workers for the
    retriever, scorer and ingress; KubeRay's autoscaler adds and removes workers as Serve's
    autoscaling and the training jobs ask for them."""
    s = cfg.serve
    head = _container(
        "ray-head",
        image,
        {"cpu": "4", "memory": "16Gi"},
        ports=[
            {"containerPort": 6379, "name": "gcs"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": s.port, "name": "serve"},
        ],
    )
    gpu = _container("ray-worker", image, {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"})
    cpu = _container("ray-worker", image, {"cpu": "4", "memory": "16Gi"})
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300},
        "headGroupSpec": {
            # 0.0.0.0 inside the pod, so the head service reaches it; `network_policy` admits
            # only operator pods to it: job submission runs code on the cluster.
            "rayStartParams": {
                "dashboard-host": "0.0.0.0",
                "num-cpus": "0",
                "metrics-export-port": str(METRICS_PORT),
            },
            "template": _pod(head, _labels(cfg)),
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "replicas": max(1, s.generator.autoscaling.min_replicas),
                "minReplicas": max(1, s.generator.autoscaling.min_replicas),
                "maxReplicas": max(
                    s.generator.autoscaling.max_replicas, cfg.consolidate.num_workers
                ),
                "rayStartParams": {"metrics-export-port": str(METRICS_PORT)},
                "template": _pod(gpu, _labels(cfg)),
            },
            {
                "groupName": "cpu",
                "replicas": 1,
                "minReplicas": 1,
                "maxReplicas": 4,
                "rayStartParams": {"metrics-export-port": str(METRICS_PORT)},
                "template": _pod(cpu, _labels(cfg)),
            },
        ],
    }


def rayservice(cfg: Config, image: str = IMAGE) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": cfg.serve.app_name},
        "spec": {
            # A new image or cluster spec comes up as a new cluster; traffic moves when it serves.
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": _dump(serve_config(cfg)),
            "rayClusterConfig": ray_cluster_spec(cfg, image),
        },
    }


def head_service_address(cfg: Config) -> str:
    """The job-submission address of the RayService's cluster (KubeRay's head service)."""
    return f"http://{cfg.serve.app_name}-head-svc:8265"


def sleep_cronjob(cfg: Config, config_path: str, image: str = IMAGE, schedule="0 3 * * *"):
    """A nightly `ray job submit` of the consolidation to the serving cluster; the scheduler
    actor (`consolidate.schedule.auto`) does the same on a threshold inside the cluster."""
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        head_service_address(cfg),
        "--submission-id",
        "sleep-$(date +%Y%m%d-%H%M%S)",
        "--",
        "python",
        "-m",
        "cls_ray.cli",
        "sleep",
        "--config",
        config_path,
    ]
    line = " ".join(c if c.startswith("sleep-$(") else shlex.quote(c) for c in cmd)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"{cfg.serve.app_name}-sleep"},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        # The one pod that submits jobs: `network_policy` lets it reach 8265.
                        "metadata": {"labels": {OPERATOR_LABEL: "true"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "submit",
                                    "image": image,
                                    "workingDir": WORKDIR,
                                    "command": ["/bin/sh", "-c", line],
                                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                                }
                            ],
                        },
                    },
                }
            },
        },
    }


def prm_rayjob(cfg: Config, config_path: str, image: str = IMAGE) -> dict:
    """PRM training as a RayJob on its own cluster, deleted when the job ends: it needs no
    serving, only the shared state (it writes prm/vN there; the scorer loads the newest)."""
    spec = ray_cluster_spec(cfg, image)
    spec["workerGroupSpecs"] = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    g = spec["workerGroupSpecs"][0]
    g["replicas"] = g["minReplicas"] = g["maxReplicas"] = max(1, cfg.prm.num_workers)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"{cfg.serve.app_name}-prm-train"},
        "spec": {
            "entrypoint": f"python -m cls_ray.cli prm train --config {shlex.quote(config_path)}",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": spec,
        },
    }


def network_policy(cfg: Config) -> dict:
    """Who may reach the pods of the app's clusters: each other (Ray's own ports), pods or
    namespaces labelled `cls-ray/client=true` the Serve HTTP port (an ingress controller that
    terminates TLS, say), pods labelled `cls-ray/operator=true` the dashboard's job submission,
    Prometheus (`cls-ray/monitoring=true`) the metrics port, KubeRay's operator the dashboard
    and its agent (Serve's status); nothing else. Egress stays open (Milvus, object storage)."""
    me = {"podSelector": {"matchLabels": {APP_LABEL: cfg.serve.app_name}}}
    client = [
        {"podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}},
        {"namespaceSelector": {"matchLabels": {CLIENT_LABEL: "true"}}},
    ]
    operator = [{"podSelector": {"matchLabels": {OPERATOR_LABEL: "true"}}}]
    monitoring = [
        {"podSelector": {"matchLabels": {MONITORING_LABEL: "true"}}},
        {"namespaceSelector": {"matchLabels": {MONITORING_LABEL: "true"}}},
    ]
    # KubeRay's operator (in any namespace) reads Serve's status from the dashboard and its agent.
    kuberay = [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
        }
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{cfg.serve.app_name}-ingress"},
        "spec": {
            "podSelector": {"matchLabels": {APP_LABEL: cfg.serve.app_name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [me]},
                {"from": client, "ports": [{"protocol": "TCP", "port": cfg.serve.port}]},
                {"from": operator, "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
                {"from": monitoring, "ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
                {
                    "from": kuberay,
                    "ports": [
                        {"protocol": "TCP", "port": DASHBOARD_PORT},
                        {"protocol": "TCP", "port": DASHBOARD_AGENT_PORT},
                    ],
                },
            ],
        },
    }


def grafana_dashboard(cfg: Config) -> dict:
    """The dashboard (`cls_ray.dashboard`) as a ConfigMap that Grafana's dashboard sidecar
    (kube-prometheus-stack: `grafana_dashboard: "1"`) loads; or import its JSON by hand."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{cfg.serve.app_name}-grafana-dashboard",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "cls-ray"},
        },
        "data": {"cls-ray.json": json.dumps(dashboard(), indent=2) + "\n"},
    }


def state_claim(size: str = "500Gi") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": STATE_CLAIM},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": size}},
        },
    }


HEADER = (
    "# Generated from {config} by `cls-ray cluster render --config {config}`:\n"
    "# edit the config and render again (a test fails when this file drifts from the code).\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Serve config, scripts) as literal blocks, readable in review."""


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def manifests(cfg: Config, config_path: str, image: str = IMAGE) -> dict[str, list[dict]]:
    return {
        "rayservice.yaml": [rayservice(cfg, image)],
        "sleep-cronjob.yaml": [sleep_cronjob(cfg, config_path, image)],
        "prm-rayjob.yaml": [prm_rayjob(cfg, config_path, image)],
        "storage.yaml": [state_claim()],
        "networkpolicy.yaml": [network_policy(cfg)],
        "grafana-dashboard.yaml": [grafana_dashboard(cfg)],
    }


def render_text(docs: list[dict], config_path: str) -> str:
    body = "---\n".join(_dump(d) for d in docs)
    return HEADER.format(config=config_path) + body


def render(cfg: Config, config_path: str, out_dir: str | Path, image: str = IMAGE) -> list[Path]:
    """Writes the manifests of `cfg` under `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, docs in manifests(cfg, config_path, image).items():
        p = out / name
        p.write_text(render_text(docs, config_path))
        paths.append(p)
    return paths
