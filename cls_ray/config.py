"""One typed config schema for the whole system, loaded from `configs/*.yaml`.

Every section forbids unknown keys, so a typo stops at load with a message that names the file,
the line, the field and what was expected. CLI overrides use dotted paths: `rgr.top_k=6`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cls_ray.world.core import WorldConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreConfig(_Section):
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
    max_text_length: int = Field(4096, ge=16)
    stop_words: list[str] | None = Field(
        None, description="BM25 stop words; null: a built-in English list; []: none."
    )


class EmbedderConfig(_Section):
    path: str = Field("", description="Sentence encoder; empty: the packaged all-MiniLM-L6-v2.")
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 runs the encoder under autocast (faster on bf16 CPUs)."
    )


class ArchConfig(_Section):
    """Shape of the small Llama built in code by `cls-ray bootstrap`."""

    hidden_size: int = Field(192, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(6, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_position: int = Field(256, ge=32)


class BootstrapConfig(_Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(100, ge=0)
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch threads; 0: all cores.")
    eval_questions: int = Field(
        4, ge=0, description="Held-out questions per family scored with oracle contexts at the end."
    )


class ModelConfig(_Section):
    path: str = Field(
        "", description="Hugging Face checkpoint path; empty: the built default under state_dir."
    )
    template: Literal["compact", "chat"] = "compact"
    arch: ArchConfig = Field(default_factory=ArchConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)


class EngineConfig(_Section):
    kind: Literal["hf", "vllm"] = "hf"
    max_new_tokens: int = Field(24, ge=1)
    temperature: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM only.")
    max_lora_rank: int = Field(64, ge=1, description="vLLM only: largest adapter rank served.")


class RGRConfig(_Section):
    top_k: int = Field(5, ge=1, le=50)
    max_steps: int = Field(5, ge=1, le=32)
    exclude_cited: bool = Field(
        True, description="Later steps skip documents earlier steps already cited."
    )
    grounded: bool = Field(
        True,
        description="Decode each step inside the grammar 'restate a context document, or "
        "answer from the steps so far' (no garbled copies); false: free generation.",
    )
    patterns: bool = Field(
        True,
        description="Follow episodic procedures (patterns sleep indexed): retrieve with the "
        "procedure's next step while the steps follow it.",
    )


class IngestConfig(_Section):
    batch_size: int = Field(256, ge=1)
    concurrency: int = Field(1, ge=1)


class BenchConfig(_Section):
    per_family: int = Field(20, ge=1)
    serve_requests: int = Field(64, ge=1, description="`bench serve`: sessions per load.")
    serve_concurrency: int = Field(16, ge=1, description="`bench serve`: sessions at once.")
    modes: list[Literal["rgr", "single", "none"]] = Field(
        default_factory=lambda: ["rgr", "single", "none"]
    )


class TrainerConfig(_Section):
    """A Ray Train + DeepSpeed job: workers, ZeRO stage, optimisation."""

    steps: int = Field(500, ge=1)
    batch_size: int = Field(16, ge=1, description="Per worker.")
    lr: float = Field(1e-4, gt=0)
    warmup: int = Field(40, ge=0)
    seed: int = 0
    log_every: int = Field(20, ge=1)
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    threads_per_worker: int = Field(1, ge=1)
    use_gpu: bool = False
    gpus_per_worker: float = Field(
        1.0, gt=0, description="With use_gpu: below 1 shares a GPU with serving replicas."
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    bf16: bool = False


class PRMConfig(TrainerConfig):
    """The process reward model: labels, encoder, Ray Train + DeepSpeed training, use."""

    path: str = Field(
        "", description="A trained PRM folder; empty: the latest under state_dir/prm."
    )
    encoder: str = Field("", description="Encoder checkpoint; empty: the packaged MiniLM.")
    num_layers: int | None = Field(None, ge=1, description="Keep the first N encoder layers.")
    max_length: int = Field(512, ge=32)
    aggregation: Literal["min", "product", "last", "mean"] = "min"
    # Labels
    label_sources: list[Literal["verifier", "mc"]] = Field(default_factory=lambda: ["verifier"])
    consensus: bool = Field(False, description="Keep only steps where automatic sources agree.")
    mc_rollouts: int = Field(4, ge=1)
    mc_soft: bool = True
    questions_per_family: int = Field(40, ge=1, description="Training questions per family.")
    samples_per_question: int = Field(2, ge=0)
    corruptions_per_question: int = Field(2, ge=0)
    sample_temperature: float = Field(1.0, gt=0)
    # Evaluation
    eval_per_family: int = Field(10, ge=1)
    eval_samples_per_question: int = Field(2, ge=0)
    best_of_n: list[int] = Field(default_factory=lambda: [1, 4, 16])
    best_of_n_per_family: int = Field(5, ge=1)


class ConsolidateConfig(TrainerConfig):
    """Sleep (LoRA SFT on what the PRM trusts, with replay) and PPO."""

    steps: int = Field(150, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(20, ge=0)
    weights: Literal["lora", "full"] = Field(
        "lora",
        description="lora: an adapter (served next to the base); full: every weight trains and "
        "the version is a full checkpoint replicas reload (SFT only).",
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1, description="2 x rank forgets least (see ANCHORS.md).")
    replay_ratio: float = Field(0.75, ge=0, lt=1, description="Share of replayed old data.")
    replay_keep: int = Field(
        512, ge=0, description="Consumed sessions kept (a random sample) for later replay."
    )
    min_r_tau: float = Field(0.5, ge=0, le=1, description="PRM gate on whole trajectories.")
    min_step_score: float = Field(0.5, ge=0, le=1, description="PRM gate on single steps.")
    retention_tolerance: float = Field(
        0.02, ge=0, le=1, description="Largest retention drop a promoted candidate may show."
    )
    new_per_family: int = Field(20, ge=1, description="bench: sessions per new family.")
    sample_n: int = Field(16, ge=1, description="bench: best-of-N samples per session.")
    eval_per_family: int = Field(20, ge=1)
    corrupted_share: float = Field(
        0.3, ge=0, lt=1, description="bench ablation: share of sessions with wrong steps."
    )
    # Phase 1, PPO (`cls-ray ppo`)
    ppo_steps: int = Field(60, ge=1)
    ppo_lr: float = Field(5e-4, gt=0)
    ppo_batch_size: int = Field(8, ge=1, description="Trajectories per worker and update.")
    ppo_kl_beta: float = Field(0.05, ge=0, description="Per-token KL penalty to the reference.")
    ppo_kl_kind: Literal["k1", "k2", "k3"] = Field(
        "k1", description="k1 as a reward penalty: k3 explodes where the policy drops a token."
    )
    ppo_clip: float = Field(0.2, gt=0)
    ppo_vf_coef: float = Field(0.5, ge=0)
    ppo_lam: float = Field(0.95, ge=0, le=1)
    ppo_tis_cap: float = Field(2.0, ge=1, description="Truncated importance weight cap.")
    ppo_credit: Literal["sum", "min"] = Field(
        "min", description="min: each step's return is the worst step still ahead (PURE)."
    )
    ppo_whiten: Literal["full", "scale", "none"] = Field(
        "scale",
        description="Advantage normalisation: scale keeps each advantage's sign (the reward "
        "offset is the baseline); full also subtracts the batch mean.",
    )
    ppo_ptx_coef: float = Field(
        1.0, ge=0, description="Weight of the replay NLL term (PPO-ptx) against forgetting."
    )
    ppo_ptx_batch: int = Field(16, ge=1, description="Replayed pairs per worker and update.")
    ppo_reward_offset: float = Field(
        0.5, description="Step reward = PRM score minus this, so doubtful steps cost."
    )
    ppo_fresh_per_family: int = Field(
        10, ge=0, description="Fresh rollouts per family on replayed questions."
    )
    ppo_temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    # The sleep scheduler (a coordinator actor next to the serving application)
    auto_sleep: bool = Field(
        False, description="Start consolidation by itself (threshold, timer); admin always can."
    )
    sleep_min_sessions: int = Field(64, ge=1, description="Unconsumed sessions that start one.")
    sleep_interval_s: float = Field(
        0.0, ge=0, description="Also start one this often when sessions wait (0: no timer)."
    )
    sleep_poll_s: float = Field(5.0, gt=0)
    sleep_method: Literal["sft", "ppo"] = "sft"
    sleep_limit: int = Field(1000, ge=1, description="Sessions one consolidation consumes.")


class AutoscalingConfig(_Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(
        4, gt=0, description="Generator requests (each a round of a session batch) per replica."
    )
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)


class ServeConfig(_Section):
    """The Serve application: HTTP on `host:port`, replicas and batching from here."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = "cls-ray"
    access_log: bool = Field(True, description="Serve's per-request access log lines.")
    generator_autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    generator_num_cpus: float = Field(0.5, gt=0)
    generator_num_gpus: float = Field(
        0.0, ge=0, description="GPUs per generator replica (vLLM: 1, or a share of one)."
    )
    max_batch_size: int = Field(16, ge=1, description="Next-step requests per engine call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    retriever_max_batch_size: int = Field(32, ge=1, description="Queries per embed + search.")
    retriever_batch_wait_s: float = Field(0.02, ge=0)
    session_batch_size: int = Field(
        16, ge=1, description="Sessions an ingress replica runs in lock-step together."
    )
    session_batch_wait_s: float = Field(0.01, ge=0)
    max_concurrent_sessions: int = Field(
        64, ge=1, description="Sessions one ingress replica runs at once; more wait in queue."
    )
    generator_max_ongoing_requests: int = Field(
        64, ge=1, description="Must exceed max_batch_size for batches to fill."
    )
    retriever_max_ongoing_requests: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _batches_fit(self) -> ServeConfig:
        # A lock-step group sends all its sessions' prompts (queries) as one request, which
        # the generator's (retriever's) batch must be able to hold.
        for name in ("max_batch_size", "retriever_max_batch_size"):
            if getattr(self, name) < self.session_batch_size:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be at least session_batch_size "
                    f"({self.session_batch_size})"
                )
        return self

    admin_key_env: str = Field(
        "CLS_RAY_ADMIN_KEY",
        description="Environment variable holding the admin API key; unset: admin disabled.",
    )
    weight_sync: Literal["reload", "stream"] = Field(
        "reload",
        description="How a full-weight version reaches running generator replicas: each "
        "reloads it from storage, or one sender streams it to all of them over a collective "
        "group (NCCL on GPUs, gloo on CPU) and each checks the checksum of what arrived.",
    )
    weight_sync_host: str = Field(
        "",
        description="Address the weight stream's sender listens on; empty: its node's address.",
    )
    weight_sync_waves: int = Field(
        1,
        ge=1,
        description="Replicas stream in this many waves, the others serving meanwhile (a vLLM "
        "replica pauses while its weights stream in place).",
    )
    weight_sync_bucket_mb: int = Field(256, ge=1, description="Tensors per broadcast, in MB.")
    weight_sync_timeout_s: float = Field(600.0, gt=0, description="The whole transfer, at most.")
    weight_sync_join_timeout_s: float = Field(
        60.0, gt=0, description="Every replica in the group, at most (a replica gone meanwhile)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_question_chars: int = Field(2000, ge=10)


class StorageConfig(_Section):
    """Durable storage beyond the state folder (see `cls_ray.storage`)."""

    uri: str = Field(
        "",
        description="Where sealed replay-buffer segments (replay/) and the adapters and "
        "checkpoints of consolidated versions (adapters/) go: a folder or a URI (s3://bucket/"
        "prefix, gs://..., hdfs://...; credentials from the environment); empty: under "
        "state_dir. ${VAR} is read from the environment on use.",
    )


class RayConfig(_Section):
    address: str = Field("", description="Ray cluster address; empty: a local cluster.")
    num_cpus: int | None = Field(None, ge=1)


class Config(_Section):
    state_dir: str = Field(".state", description="Models, Milvus Lite file, sessions, reports.")
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

    def rgr_options(self, **overrides) -> dict:
        """Keyword arguments of `run_rgr` / `bench_rgr` from `rgr`; non-None overrides win."""
        opts = {
            "top_k": self.rgr.top_k,
            "max_steps": self.rgr.max_steps,
            "exclude_cited": self.rgr.exclude_cited,
            "grounded": self.rgr.grounded,
            "patterns": self.rgr.patterns,
        }
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return opts

    @property
    def replay_path(self) -> Path:
        return self.state_path / "replay"

    @property
    def storage_uri(self) -> str:
        """`storage.uri` with its `${VAR}` read from the environment ("" when unset)."""
        return expand_env(self.storage.uri, "storage.uri")

    @property
    def artifacts(self):
        """The `Storage` that versions are published to, or None (they stay in state_dir)."""
        from cls_ray.storage import Storage, join_uri

        return Storage(join_uri(self.storage_uri, "adapters")) if self.storage_uri else None

    @property
    def replay_segments(self) -> str | None:
        """Where the replay buffer seals its segments (None: `replay_path`/segments)."""
        from cls_ray.storage import join_uri

        return join_uri(self.storage_uri, "replay") if self.storage_uri else None

    @property
    def store_uri(self) -> str:
        return self.store.uri or str(self.state_path / "milvus.db")


def expand_env(value: str, field: str) -> str:
    """`value` with `${VAR}` read from the environment; a clear error when VAR is unset."""
    if "${" not in value:
        return value
    out = os.path.expandvars(value)
    if "${" in out:
        missing = out[out.index("${") + 2 :].split("}")[0]
        raise ConfigError(f"{field} reads ${{{missing}}} from the environment, which is not set")
    return out


class ConfigError(ValueError):
    """A config that cannot be used; the message names file, line, field and expectation."""


def _line_of(text: str, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at `loc`, or of its closest existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
            if nxt is None:
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return (key_node.start_mark.line + 1) if key_node else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    cur[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads and validates a config file; `overrides` are `dotted.key=yaml_value` strings."""
    text, name = "", "<defaults>"
    if path is not None:
        p = Path(path)
        name = str(p)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{name}: cannot read config: {e.strerror}") from e
    try:
        data = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{name}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    from_cli: set[str] = set()
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw else "")
        from_cli.add(key.strip())
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            where = "(command line)" if field in from_cli else name
            line = None if field in from_cli or not text else _line_of(text, err["loc"])
            if line:
                where += f":{line}"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling and section)"
            lines.append(f"{where}: {field}: {msg}; got {err.get('input')!r}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
