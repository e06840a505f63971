"""The generator deployment: holds an engine per model version (`VersionSet`) and batches the
next step of concurrent sessions into one engine call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray import serve

from actors.metrics import observe, set_gauge
from cls_ray import metrics as m
from cls_ray.config import Config
from cls_ray.engine.factory import build_engine
from cls_ray.registry import registry_for
from cls_ray.serving.batching import generation_groups
from cls_ray.serving.versions import VersionSet, stream_intact
from cls_ray.weight_sync import Rendezvous, TensorSpec


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


class Generator:
    def __init__(self, cfg: dict, engine_factory: Callable | None = None):
        self.cfg = Config.model_validate(cfg)
        factory = engine_factory or build_engine
        self.versions = VersionSet(
            lambda version, path: factory(self.cfg, version, path),
            self.cfg.state_path / "cache" / "artifacts",
        )
        self.generate.set_max_batch_size(self.cfg.serve.generator.max_batch_size)
        self.generate.set_batch_wait_timeout_s(self.cfg.serve.generator.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict) -> None:
        """`{"version": name, "path": checkpoint or adapter folder, "max_batch_size": n}`: load
        the version and make it current; set the batch size.

        `"version": "current"` (what a cluster's RayService declares) serves the registry's
        current version, so a new or restarted cluster comes back on what was promoted."""
        if user_config.get("max_batch_size"):
            self.generate.set_max_batch_size(int(user_config["max_batch_size"]))
        version, path = user_config.get("version", "base"), user_config.get("path")
        if version == "current":
            v = registry_for(self.cfg).current()
            version, path = v.name, None if v.kind == "base" else v.artifact_uri
        before = self.versions.current
        self.versions.switch(version, path)
        rid = _replica_id()
        if before and before != version:
            set_gauge(m.REPLICA_VERSION, 0, replica=rid, version=before)
        set_gauge(m.REPLICA_VERSION, 1, replica=rid, version=version)

    def weight_sync_ranks(self, manifest: list | None = None, version: str | None = None) -> dict:
        """This replica's id and how it joins a weight stream (see `VersionSet.sync_plan`)."""
        specs = None if manifest is None else [TensorSpec.from_json(r) for r in manifest]
        return {"replica": _replica_id(), **self.versions.sync_plan(specs, version)}

    async def receive_weights(self, sync: dict) -> dict:
        """Joins a weight stream (`actors.weight_stream`) and checks what arrived against the
        trainer's checksum. An HF replica receives into a copy and keeps serving the current
        version (the deploy that follows switches it); a vLLM replica's weights change in
        place: it serves the new version at once or, if the stream fails or arrives altered,
        loads what it served again."""
        rid = _replica_id()
        rank = sync["ranks"].get(rid)
        if rank is None:  # started after the group was formed: it loads from storage
            return {"replica": rid, "joined": False}
        engine = self.versions.engine()
        t0 = time.perf_counter()
        new, got, ok = None, {}, False
        try:
            new, got = await asyncio.to_thread(
                engine.stream_in,
                Rendezvous(**sync["rendezvous"]),
                rank,
                [TensorSpec.from_json(r) for r in sync["manifest"]],
                sync["bucket_bytes"],
                sync["version"],
            )
            ok = stream_intact(got, sync["checksum"])
        finally:
            if not ok and engine.shared_model is not None:
                await asyncio.to_thread(self.versions.reload_current)
        if ok:
            self.versions.accept(sync["version"], new, sync.get("path"))
        return {
            "replica": rid,
            "joined": True,
            "ok": ok,
            "seconds": time.perf_counter() - t0,
            **got,
        }

    def current_version(self) -> str:
        # Said again at each ask (the ingress asks once a session batch): the gauge an
        # operator reads stays fresh whatever the exporter kept since the last switch.
        set_gauge(m.REPLICA_VERSION, 1, replica=_replica_id(), version=self.versions.current)
        return self.versions.current

    def replica_version(self, checksum: bool = False) -> dict:
        """This replica's id and the version it serves (to check a broadcast reached all)."""
        return {"replica": _replica_id(), **self.versions.describe(checksum)}

    @serve.batch(
        max_batch_size=16,
        batch_wait_timeout_s=0.01,
        batch_size_fn=lambda groups: sum(len(g["prompts"]) for g in groups),
    )
    async def generate(self, groups: list[dict]) -> list[list[dict]]:
        """Each request is a group: the next step of the sessions one ingress batch runs
        together (`prompts`, `choices`, `temperature`, `version`). All groups that arrive
        together run in one engine call per (version, temperature, grounded); the batch size
        counts prompts."""
        out: list[list[dict | None]] = [[None] * len(g["prompts"]) for g in groups]
        plan = generation_groups(groups, self.versions.current)
        for (version, temp, grounded), idx in plan.items():
            engine = self.versions.engine(version)
            t0 = time.perf_counter()
            gens = await asyncio.to_thread(
                engine.generate,
                [groups[gi]["prompts"][pi] for gi, pi in idx],
                temperature=temp,
                choices=[groups[gi]["choices"][pi] for gi, pi in idx] if grounded else None,
            )
            observe(m.GENERATION_SECONDS, time.perf_counter() - t0, version=engine.version)
            for (gi, pi), g in zip(idx, gens, strict=True):
                out[gi][pi] = {
                    "text": g.text,
                    "token_ids": g.token_ids,
                    "logprobs": g.logprobs,
                    "version": engine.version,
                }
        return out  # type: ignore[return-value]
