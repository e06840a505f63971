"""Serving sections: the Serve application, its generator and retriever deployments, and how
full-weight versions reach running replicas."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cls_ray.config.base import Section


class AutoscalingConfig(Section):
    """Serve's `autoscaling_config`, field for field."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(
        4, gt=0, description="Generator requests (each a round of a session batch) per replica."
    )
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    look_back_period_s: float = Field(
        30.0, gt=0, description="The window over which ongoing requests are averaged."
    )
    metrics_interval_s: float = Field(
        10.0, gt=0, description="How often replicas and handles report their ongoing requests."
    )

    @model_validator(mode="after")
    def _window_holds_reports(self) -> AutoscalingConfig:
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(
                f"look_back_period_s ({self.look_back_period_s:g}) must exceed "
                f"metrics_interval_s ({self.metrics_interval_s:g}): the window needs reports"
            )
        return self


class GeneratorConfig(Section):
    """The generator deployment: replicas holding the engines, batching next-step calls."""

    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs per generator replica (vLLM: 1, or a share of one)."
    )
    max_batch_size: int = Field(16, ge=1, description="Next-step requests per engine call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int = Field(
        64, ge=1, description="Must be at least max_batch_size for batches to fill."
    )
    max_queued_requests: int = Field(
        512, ge=1, description="Requests its callers queue; the ingress answers 503 beyond."
    )


class RetrieverServeConfig(Section):
    """The retriever deployment: the embedder and the Milvus client, batching queries."""

    max_batch_size: int = Field(32, ge=1, description="Queries per embed + search.")
    batch_wait_s: float = Field(0.02, ge=0)
    max_ongoing_requests: int = Field(64, ge=1, description="At least max_batch_size.")
    max_queued_requests: int = Field(512, ge=1)


class WeightSyncConfig(Section):
    """How a full-weight version reaches running generator replicas."""

    mode: Literal["reload", "stream"] = Field(
        "reload",
        description="reload: each replica loads it from storage; stream: one sender streams "
        "it to all of them over a collective group (NCCL on GPUs, gloo on CPU) and each "
        "checks the checksum of what arrived.",
    )
    host: str = Field(
        "",
        description="Address the weight stream's sender listens on; empty: its node's address.",
    )
    waves: int = Field(
        1,
        ge=1,
        description="Replicas stream in this many waves, the others serving meanwhile (a vLLM "
        "replica pauses while its weights stream in place).",
    )
    bucket_mb: int = Field(256, ge=1, description="Tensors per broadcast, in MB.")
    timeout_s: float = Field(600.0, gt=0, description="The whole transfer, at most.")
    join_timeout_s: float = Field(
        60.0, gt=0, description="Every replica in the group, at most (a replica gone meanwhile)."
    )


class AuthConfig(Section):
    """Who may do what (`cls_ray.serving.keys`): keys with roles, anonymous asking, rates."""

    keys_file: str = Field(
        "", description="The hashed keys file; empty: <state_dir>/keys.json (`cls-ray keys`)."
    )
    anonymous: bool = Field(
        True, description="Requests without a key may ask (and only ask); off on a cluster."
    )
    rate_per_minute: float = Field(
        600.0, ge=0, description="Requests a minute per key (0: no limit); 429 beyond it."
    )
    anonymous_rate_per_minute: float = Field(
        120.0, ge=0, description="Requests a minute per client address without a key."
    )
    burst: int = Field(60, ge=1, description="Requests a caller may send at once.")
    work_per_minute: float = Field(
        20_000.0,
        ge=0,
        description="Work a minute per caller (0: no limit), in the units of "
        "`limits.max_request_cost` (best_of x max_steps x top_k); 429 beyond it.",
    )


class LimitsConfig(Section):
    """How long anything on the request path may wait and how much one request may ask for
    (`cls_ray.serving.limits`)."""

    request_timeout_s: float = Field(
        120.0, gt=0, description="Serve's HTTP proxy answers 408 after this; above session's."
    )
    session_timeout_s: float = Field(
        60.0, gt=0, description="A session's whole run, at most; 504 naming the stage after."
    )
    call_timeout_s: float = Field(
        20.0, gt=0, description="Each call to a deployment or actor on the request path."
    )
    health_timeout_s: float = Field(2.0, gt=0, description="Each dependency probe of /healthz.")
    max_queued_requests: int = Field(
        256, ge=1, description="Requests an ingress deployment queues; 503 with Retry-After beyond."
    )
    retry_after_s: float = Field(2.0, ge=0, description="What a 503 tells the client to wait.")
    max_request_cost: int = Field(
        4096, ge=1, description="best_of x max_steps x top_k of one request, at most (422 beyond)."
    )
    max_tokens: int = Field(
        1024, ge=1, description="A chat completion's max_tokens, at most (422 beyond)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LimitsConfig:
        if not self.call_timeout_s <= self.session_timeout_s < self.request_timeout_s:
            raise ValueError(
                "limits: need call_timeout_s <= session_timeout_s < request_timeout_s "
                f"(got {self.call_timeout_s}, {self.session_timeout_s}, {self.request_timeout_s})"
            )
        return self


class ServeConfig(Section):
    """The Serve application: HTTP on `host:port`, replicas and batching from here."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = "cls-ray"
    access_log: bool = Field(True, description="Serve's per-request access log lines.")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    retriever: RetrieverServeConfig = Field(default_factory=RetrieverServeConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    session_batch_size: int = Field(
        16, ge=1, description="Sessions an ingress replica runs in lock-step together."
    )
    session_batch_wait_s: float = Field(0.01, ge=0)
    max_concurrent_sessions: int = Field(
        64, ge=1, description="Sessions one ingress replica runs at once; more wait in queue."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    admin_key_env: str = Field(
        "CLS_RAY_ADMIN_KEY",
        description="Environment variable holding the admin API key; unset: admin disabled.",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_question_chars: int = Field(2000, ge=10)

    @model_validator(mode="after")
    def _batches_fit(self) -> ServeConfig:
        # A lock-step group sends all its sessions' prompts (queries) as one request, which
        # the generator's (retriever's) batch must be able to hold.
        for name, size in (
            ("generator.max_batch_size", self.generator.max_batch_size),
            ("retriever.max_batch_size", self.retriever.max_batch_size),
        ):
            if size < self.session_batch_size:
                raise ValueError(
                    f"{name} ({size}) must be at least session_batch_size "
                    f"({self.session_batch_size})"
                )
        # A batch larger than the requests a replica takes at once can never fill.
        for name, d in (("generator", self.generator), ("retriever", self.retriever)):
            if d.max_ongoing_requests < d.max_batch_size:
                raise ValueError(
                    f"{name}.max_ongoing_requests ({d.max_ongoing_requests}) must be at least "
                    f"{name}.max_batch_size ({d.max_batch_size})"
                )
        return self
