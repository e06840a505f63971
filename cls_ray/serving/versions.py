"""The model versions one generator replica holds: an engine per version, which one is current,
where each came from, and the checks a version must pass before it serves.

Sessions pin the version they started on, so a replica keeps the previous engines a while after
a switch (the base, the current one and the two most recent). A full checkpoint carries the
checksum its trainer computed; weights that differ (a partial copy on shared storage, the wrong
folder) are refused rather than served. An engine that loads weights in place (vLLM: one `LLM`
per GPU) overwrites what the engines sharing its model served: those are dropped, and load again
when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cls_ray.engine.base import StreamableEngine
from cls_ray.model.loading import recorded_checksum
from cls_ray.storage import materialize
from cls_ray.weight_sync import TensorSpec

EngineLoader = Callable[[str, str | None], StreamableEngine]


class WeightsMismatch(RuntimeError):
    """A checkpoint whose weights are not what its trainer recorded."""


def check_weights(engine: StreamableEngine, version: str, path: str | None) -> None:
    """Refuses `engine` when the checkpoint at `path` recorded a checksum its weights lack."""
    want = recorded_checksum(path) if path is not None else None
    if not want:
        return
    got = engine.checksum()
    if got is not None and got != want:
        raise WeightsMismatch(
            f"version {version}: the weights at {path} do not match the checksum its trainer "
            f"recorded ({got[:12]} != {want[:12]}); not serving them"
        )


def stream_intact(got: dict, want: str) -> bool:
    """Whether what a replica received over a weight stream is the version's weights: every
    worker's stream hash, and the whole model's checksum where the engine computed one."""
    return all(d == want for d in got["stream"]) and got.get("checksum", want) == want


class VersionSet:
    """Engines by version name; `load(version, path)` builds one (path None: the base model)."""

    def __init__(self, load: EngineLoader, cache_dir: str | Path, keep_recent: int = 2):
        self._build = load
        self.cache_dir = Path(cache_dir)
        self.keep_recent = keep_recent
        self.engines: dict[str, StreamableEngine] = {"base": load("base", None)}
        self.paths: dict[str, str | None] = {"base": None}
        self.loaded_by: dict[str, str] = {"base": "storage"}  # or "stream"
        self.current = "base"

    def engine(self, version: str | None = None) -> StreamableEngine:
        """The engine of `version`, or the current one when it is not held (or None)."""
        return self.engines.get(version or self.current) or self.engines[self.current]

    def holds(self, version: str) -> bool:
        return version in self.engines

    def switch(self, version: str, path: str | None) -> None:
        """Makes `version` current, loading it first when it is not held. The previous engines
        stay a while: sessions that started on them finish on them."""
        if version not in self.engines:
            self.load(version, path)
        self.current = version
        recent = list(self.engines)[-self.keep_recent :] if self.keep_recent else []
        keep = {"base", version, *recent}
        for v in [v for v in self.engines if v not in keep]:
            del self.engines[v]

    def load(self, version: str, path: str | None) -> None:
        """Loads `version` from its folder or URI (copied to this node once), checked against
        the checksum its trainer recorded."""
        local = materialize(path, self.cache_dir)
        engine = self._build(version, local)
        check_weights(engine, version, local)
        self._drop_overwritten(engine)
        self.engines[version] = engine
        self.paths[version] = path
        self.loaded_by[version] = "storage"

    def _drop_overwritten(self, engine: StreamableEngine) -> None:
        model = engine.shared_model
        if model is None:
            return
        for v, other in list(self.engines.items()):
            if other is not engine and other.shared_model is model:
                del self.engines[v]

    # -- weight streams ----------------------------------------------------------------------
    def sync_plan(self, manifest: Sequence[TensorSpec] | None, version: str | None) -> dict:
        """How this replica joins a stream of `version`: its ranks (one per engine worker;
        none when it holds the version already) and, given the manifest, why it cannot take it
        (another architecture), before any group forms."""
        engine = self.engines[self.current]
        holds = version is not None and self.holds(version)
        return {
            "ranks": 0 if holds else engine.sync_ranks,
            "holds": holds,
            "refuses": None if manifest is None else engine.refuses(list(manifest)),
        }

    def accept(self, version: str, engine: StreamableEngine, path: str | None) -> None:
        """Keeps an engine whose weights arrived intact over a stream. An engine that received
        in place serves the new weights from now on."""
        self._drop_overwritten(engine)
        self.engines[version] = engine
        self.paths[version] = path
        self.loaded_by[version] = "stream"
        if engine.shared_model is not None:
            self.current = version

    def reload_current(self) -> None:
        """After a stream that overwrote the current weights part-way or wrongly: the current
        version, loaded again from where it came from."""
        current = self.current
        self.engines.pop(current, None)
        self.load(current, self.paths.get(current))

    def describe(self, checksum: bool = False) -> dict:
        """The version served, how it arrived and, with `checksum`, the SHA-256 of its weights."""
        out = {"version": self.current, "loaded_by": self.loaded_by.get(self.current)}
        if checksum:
            got = self.engines[self.current].checksum()
            if got is not None:
                out["checksum"] = got
        return out
