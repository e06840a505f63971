"""Streaming a full-weight version to every generator replica (`serve.weight_sync.mode: stream`).

Reloading from shared storage makes every replica read the whole checkpoint; streaming reads it
once. A sender actor loads the version's checkpoint (the state dict its trainer gathered from
ZeRO-3 and hashed), checks it against the recorded checksum before anything moves, and
broadcasts it over a stateless collective group that every replica's engine workers join
(Serve's `DeploymentHandle.broadcast` reaches each replica; ranks are handed out by replica id,
so a replica that autoscaling adds meanwhile loads from storage instead). Each replica hashes
what arrived and keeps the new engine only if the hash is the recorded checksum.

It runs when the version is promoted, after the gate: serving replicas never hold weights that
did not pass it. The deploy that follows only switches replicas to an engine they already hold.
"""

from __future__ import annotations

import logging
import time

import ray
from ray import serve
from ray.serve._private.api import serve_start

from cls_ray.config import Config
from cls_ray.model.loading import recorded_checksum, weights_checksum
from cls_ray.registry import ModelVersion
from cls_ray.serving.names import GENERATOR
from cls_ray.storage import materialize
from cls_ray.weight_sync import Channel, CheckpointSource, Rendezvous, free_port, host_store, send

logger = logging.getLogger(__name__)


class WeightSyncError(RuntimeError):
    """The stream did not reach every replica intact; replicas load the version from storage."""


def sync_backend(cfg: Config) -> str:
    if cfg.engine.kind == "vllm":
        return "pynccl"  # vLLM's workers speak its own NCCL communicator
    return "nccl" if cfg.engine.device.startswith("cuda") else "gloo"


class WeightSender:
    """Rank 0 of a weight stream: one version's state dict, loaded once."""

    def __init__(self, cfg: dict, uri: str):
        self.cfg = Config.model_validate(cfg)
        path = materialize(uri, self.cfg.state_path / "cache" / "artifacts")
        self.recorded = recorded_checksum(path)
        device = "cuda" if sync_backend(self.cfg) != "gloo" else "cpu"
        self.source = CheckpointSource(str(path), device)

    def open(self) -> dict:
        """The stream's manifest, the checksum of the weights to send (the trainer's definition)
        and the checksum the trainer recorded."""
        s = self.cfg.serve
        self.host = s.weight_sync.host or ray.util.get_node_ip_address()
        # vLLM's group serves its own store (a new port per wave); the others share this one.
        pynccl = sync_backend(self.cfg) == "pynccl"
        self.store = None if pynccl else host_store(self.host, s.weight_sync.timeout_s)
        return {
            "manifest": [t.to_json() for t in self.source.manifest],
            "checksum": weights_checksum(self.source.model),
            "recorded": self.recorded,
        }

    def meet(self) -> dict:
        """Where the next group meets."""
        if self.store is None:
            return {"host": self.host, "port": free_port(self.host), "hosted": False}
        return {"host": self.host, "port": self.store.port, "hosted": True}

    def send(self, rendezvous: dict) -> dict:
        t0 = time.perf_counter()
        channel = Channel(
            Rendezvous(**rendezvous), 0, device=self.source.model.device, store=self.store
        )
        try:
            # `open` computed the state's checksum; the stream hash would repeat it.
            send(
                channel,
                self.source.manifest,
                self.source.tensor,
                self.cfg.serve.weight_sync.bucket_mb << 20,
                hash=False,
            )
        finally:
            channel.close()
        nbytes = sum(t.numel() * t.element_size() for t in self.source.state.values())
        return {"seconds": time.perf_counter() - t0, "bytes": nbytes}


def _members(
    handle, client, cfg: Config, manifest: list, version: str, timeout_s: float
) -> list[dict]:
    """Every running generator replica, each once: a handle's router learns the replicas from
    the controller shortly after it is made, so ask until the replicas that answer are the ones
    the controller reports running."""
    deadline = time.monotonic() + timeout_s
    while True:
        members = handle.broadcast("weight_sync_ranks", manifest, version).results(
            timeout_s=timeout_s
        )
        app = client.get_serve_details()["applications"][cfg.serve.app_name]
        running = {
            r["replica_id"]
            for r in app["deployments"][GENERATOR]["replicas"]
            if r["state"] == "RUNNING"
        }
        if running and {m["replica"] for m in members} == running:
            return members
        if time.monotonic() > deadline:
            raise WeightSyncError(
                f"the generator replicas that answered ({len(members)}) are not the "
                f"{len(running)} running"
            )
        time.sleep(0.5)


def _check(v: ModelVersion, results: list) -> None:
    failed = [g for g in results if isinstance(g, BaseException)]
    if failed:
        raise WeightSyncError(f"{len(failed)} replica(s) failed to receive {v.name}: {failed[0]}")
    bad = [g["replica"] for g in results if g["joined"] and not g["ok"]]
    if bad:
        raise WeightSyncError(f"the weights of {v.name} arrived altered at replicas {bad}")


def stream_version(cfg: Config, v: ModelVersion) -> dict:
    """Streams full-weight version `v` into every running generator replica of the app. Raises
    `WeightSyncError` when it did not reach all of them intact (they then load from storage)
    and `ValueError` when the checkpoint is not what its trainer recorded."""
    s = cfg.serve
    t0 = time.perf_counter()
    handle = serve.get_deployment_handle(GENERATOR, s.app_name)
    backend = sync_backend(cfg)
    actor = (
        ray.remote(WeightSender)
        .options(num_cpus=0.1, num_gpus=1 if backend != "gloo" else 0)
        .remote(cfg.model_dump(mode="json"), v.artifact_uri)
    )
    try:
        try:
            opened = ray.get(actor.open.remote(), timeout=s.weight_sync.timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            raise WeightSyncError(f"the sender of {v.name} did not start: {e}") from e
        if not opened["recorded"]:  # nothing vouches for these weights: never stream them
            raise ValueError(
                f"version {v.name}: the checkpoint at {v.artifact_uri} records no checksum of "
                "its weights; not streaming it"
            )
        if opened["checksum"] != opened["recorded"]:
            raise ValueError(
                f"version {v.name}: the weights at {v.artifact_uri} do not match the checksum "
                f"its trainer recorded ({opened['checksum'][:12]} != {opened['recorded'][:12]})"
            )
        members = _members(
            handle, serve_start(), cfg, opened["manifest"], v.name, s.weight_sync.timeout_s
        )
        refused = [m for m in members if m["refuses"]]
        if refused:
            raise WeightSyncError(
                f"replica {refused[0]['replica']} cannot take {v.name} as a stream: "
                f"{refused[0]['refuses']}"
            )
        streaming = [m for m in members if m["ranks"]]
        if not streaming and not all(m["holds"] for m in members):
            raise WeightSyncError("no generator replica can receive a weight stream")
        n = min(s.weight_sync.waves, len(streaming))
        got, out = [], {"seconds": 0.0, "bytes": 0}  # every replica holds it already: n = 0
        for wave in range(n):
            # Rolling: a vLLM replica pauses while its weights stream, so the replicas go in
            # waves and the others keep serving.
            ranks, world = {}, 1
            for m in streaming[wave::n]:
                ranks[m["replica"]] = world
                world += m["ranks"]
            meet = ray.get(actor.meet.remote(), timeout=s.weight_sync.timeout_s)
            rdv = Rendezvous(
                meet["host"],
                meet["port"],
                world,
                backend,
                s.weight_sync.timeout_s,
                name=f"cls-ray-weights-{wave}",
                hosted=meet["hosted"],
                join_timeout_s=s.weight_sync.join_timeout_s,
            )
            sent = actor.send.remote(rdv.to_json())
            results = handle.broadcast(
                "receive_weights",
                {
                    "version": v.name,
                    "path": v.artifact_uri,
                    "rendezvous": rdv.to_json(),
                    "ranks": ranks,
                    "manifest": opened["manifest"],
                    "bucket_bytes": s.weight_sync.bucket_mb << 20,
                    "checksum": opened["checksum"],
                },
            ).results(timeout_s=s.weight_sync.timeout_s, return_exceptions=True)
            _check(v, results)
            got += [g for g in results if g["joined"]]
            try:
                done = ray.get(sent, timeout=s.weight_sync.timeout_s)
            except Exception as e:  # noqa: BLE001 - the group failed; the replicas say why
                raise WeightSyncError(f"the weight stream of {v.name} failed: {e}") from e
            out = {"seconds": out["seconds"] + done["seconds"], "bytes": done["bytes"]}
    finally:
        ray.kill(actor)
    report = {
        "version": v.name,
        "replicas": len(got),
        "waves": n,
        "ranks": sum(m["ranks"] for m in streaming),
        "checksum": opened["checksum"],
        "megabytes": out["bytes"] / 1e6,
        "send_seconds": out["seconds"],
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "streamed %s to %d replica(s) in %d wave(s): %.1f MB in %.2f s (%.2f s with set-up)",
        v.name,
        report["replicas"],
        report["waves"],
        report["megabytes"],
        report["send_seconds"],
        report["seconds"],
    )
    return report
