"""The whole config: one section per component, nested where a component has parts.

The training sections live in `cls_ray.config.training`, the serving ones in
`cls_ray.config.serve`; `cls_ray.config.loader` reads a YAML file into `Config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cls_ray.config.base import Section, expand_env
from cls_ray.config.serve import ServeConfig
from cls_ray.config.training import ConsolidateConfig, PRMConfig
from cls_ray.storage import Storage, join_uri
from cls_ray.world.core import WorldConfig


class TaskConfig(Section):
    """Which data the system learns on: the built-in world, or a folder of JSONL files (corpus,
    train / eval / retention questions; see DESIGN.md, "Tasks")."""

    kind: Literal["world", "files"] = Field(
        "world", description="world: the built-in world (its `world` section); files: `path`."
    )
    path: str = Field("", description="files: the task's folder (corpus.jsonl, eval.jsonl, ...).")
    answer_check: Literal["em", "f1"] | None = Field(
        None, description="em (exact match) or f1 (token F1); null: the task's own (task.yaml)."
    )
    f1_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="f1: the F1 an answer needs to count as right; null: the task's own, else 0.5.",
    )

    @model_validator(mode="after")
    def _path_for_files(self):
        if self.kind == "files" and not self.path:
            raise ValueError("task.kind files needs task.path (the task's folder)")
        return self


class StoreConfig(Section):
    """Where the episodic and declarative memories live (pymilvus `MilvusClient`)."""

    uri: str = Field(
        "",
        description="Milvus server URI (http://host:19530) or a Milvus Lite .db path; empty: "
        "Milvus Lite at <state_dir>/milvus.db; ${VAR} is read from the environment on use.",
    )
    token: str = Field(
        "",
        description="Milvus token; ${VAR} is read from the environment when the client "
        "connects (so it never lands in a manifest or a log).",
    )
    collection_prefix: str = Field("cls", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    index_type: Literal["AUTOINDEX", "FLAT", "HNSW", "IVF_FLAT"] = Field(
        "AUTOINDEX",
        description="Dense index; AUTOINDEX, FLAT, HNSW and IVF_FLAT are valid on "
        "Milvus Lite and on a server.",
    )
    index_params: dict[str, Any] = Field(default_factory=dict)
    search_mode: Literal["dense", "bm25", "hybrid"] = Field(
        "dense", description="dense (MiniLM), bm25 (full text) or hybrid (both, fused by RRF)."
    )
    rrf_k: int = Field(60, ge=1, description="k of reciprocal-rank fusion in hybrid mode.")
    max_text_length: int = Field(
        4096, ge=16, description="A text's bytes (UTF-8) kept in Milvus; longer ones are cut."
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Every Milvus call, at most (a hung server raises, not hangs)."
    )
    stop_words: list[str] | None = Field(
        None, description="BM25 stop words; null: a built-in English list; []: none."
    )


class EmbedderConfig(Section):
    path: str = Field("", description="Sentence encoder; empty: the packaged all-MiniLM-L6-v2.")
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 runs the encoder under autocast (faster on bf16 CPUs)."
    )


class ArchConfig(Section):
    """Shape of the small Llama built in code by `cls-ray bootstrap`."""

    hidden_size: int = Field(192, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(6, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_position: int = Field(256, ge=32)


class BootstrapConfig(Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(100, ge=0)
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch threads; 0: all cores.")
    bf16: bool = Field(
        False, description="Matrix products in bfloat16 (autocast; weights and optimizer fp32)."
    )
    eval_questions: int = Field(
        4, ge=0, description="Held-out questions per family scored with oracle contexts at the end."
    )


class ModelConfig(Section):
    path: str = Field(
        "", description="Hugging Face checkpoint path; empty: the built default under state_dir."
    )
    template: Literal["compact", "chat"] = "compact"
    system_prompt: str = Field(
        "", description="chat: the system prompt; empty: the built-in one (cls_ray.steps)."
    )
    version: str = Field(
        "",
        description="The registered version local commands run (`--version`); empty: the "
        "registry's current one.",
    )
    arch: ArchConfig = Field(default_factory=ArchConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)


class EngineConfig(Section):
    kind: Literal["hf", "vllm"] = "hf"
    max_new_tokens: int = Field(24, ge=1)
    temperature: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM only.")
    max_lora_rank: int = Field(64, ge=1, description="vLLM only: largest adapter rank served.")


class RGRConfig(Section):
    top_k: int = Field(5, ge=1, le=50)
    max_steps: int = Field(5, ge=1, le=32)
    exclude_cited: bool = Field(
        True, description="Later steps skip documents earlier steps already cited."
    )
    grounded: bool | None = Field(
        None,
        description="Decode each step inside the grammar 'restate a sentence of a context "
        "document, or answer from the steps so far' (no garbled copies); false: free "
        "generation; null: on for the compact template, off for chat.",
    )
    patterns: bool = Field(
        True,
        description="Follow episodic procedures (patterns sleep indexed): retrieve with the "
        "procedure's next step while the steps follow it.",
    )


class IngestConfig(Section):
    batch_size: int = Field(256, ge=1)
    concurrency: int = Field(1, ge=1)


class BenchConfig(Section):
    per_family: int = Field(
        20,
        ge=1,
        description="Questions per family (group) on the world; a files task's benchmarks "
        "take all its eval questions unless --per-group says otherwise.",
    )
    serve_requests: int = Field(64, ge=1, description="`bench serve`: sessions per load.")
    serve_concurrency: int = Field(16, ge=1, description="`bench serve`: sessions at once.")
    modes: list[Literal["rgr", "single", "none"]] = Field(
        default_factory=lambda: ["rgr", "single", "none"]
    )


class StorageConfig(Section):
    """Durable storage beyond the state folder (see `cls_ray.storage`)."""

    uri: str = Field(
        "",
        description="Where sealed replay-buffer segments (replay/) and the adapters and "
        "checkpoints of consolidated versions (adapters/) go: a folder or a URI (s3://bucket/"
        "prefix, gs://..., hdfs://...; credentials from the environment); empty: under "
        "state_dir. ${VAR} is read from the environment on use.",
    )


class RayConfig(Section):
    address: str = Field("", description="Ray cluster address; empty: a local cluster.")
    num_cpus: int | None = Field(None, ge=1)


class Config(Section):
    state_dir: str = Field(".state", description="Models, Milvus Lite file, sessions, reports.")
    task: TaskConfig = Field(default_factory=TaskConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    rgr: RGRConfig = Field(default_factory=RGRConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    prm: PRMConfig = Field(default_factory=PRMConfig)
    consolidate: ConsolidateConfig = Field(default_factory=ConsolidateConfig)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    @property
    def model_path(self) -> Path:
        return Path(self.model.path) if self.model.path else self.state_path / "models" / "base"

    @property
    def grounded(self) -> bool:
        """`rgr.grounded`, or by default: on for the compact template, off for chat."""
        g = self.rgr.grounded
        return self.model.template == "compact" if g is None else g

    def rgr_options(self, **overrides) -> dict:
        """Keyword arguments of `run_rgr` / `bench_rgr` from `rgr`; non-None overrides win."""
        opts = {
            "top_k": self.rgr.top_k,
            "max_steps": self.rgr.max_steps,
            "exclude_cited": self.rgr.exclude_cited,
            "grounded": self.grounded,
            "patterns": self.rgr.patterns,
        }
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return opts

    @property
    def keys_path(self) -> Path:
        """The hashed API keys (`cls-ray keys`)."""
        a = self.serve.auth
        return Path(a.keys_file) if a.keys_file else self.state_path / "keys.json"

    @property
    def replay_path(self) -> Path:
        return self.state_path / "replay"

    @property
    def storage_uri(self) -> str:
        """`storage.uri` with its `${VAR}` read from the environment ("" when unset)."""
        return expand_env(self.storage.uri, "storage.uri")

    @property
    def artifacts(self):
        """The `Storage` that versions are published to, or None (they stay in state_dir). Its
        URI keeps `storage.uri`'s `${VAR}`s, so the registry stores references, not secrets."""
        return Storage(join_uri(self.storage.uri, "adapters")) if self.storage_uri else None

    @property
    def replay_segments(self) -> str | None:
        """Where the replay buffer seals its segments (None: `replay_path`/segments), with
        `storage.uri`'s `${VAR}`s kept: `cls_ray.storage` reads them where it opens the URI."""
        return join_uri(self.storage.uri, "replay") if self.storage_uri else None

    @property
    def store_uri(self) -> str:
        return self.store.uri or str(self.state_path / "milvus.db")
