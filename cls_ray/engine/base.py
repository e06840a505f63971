"""What every engine is: `Generation`, the `Engine` protocol the RGR loop talks to, and the
`StreamableEngine` protocol a serving replica's engines add (checksums, weight streams)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cls_ray.steps import StepFormat

if TYPE_CHECKING:
    from cls_ray.weight_sync import Rendezvous, TensorSpec


@dataclass
class Generation:
    """One generated step: its text, token ids and the behaviour log-prob of each token."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@runtime_checkable
class Engine(Protocol):
    """A model that writes the next reasoning step for many prompts at once."""

    format: StepFormat
    version: str

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        """The prompt for the next step, in this engine's format."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
        """One next step per prompt, all prompts in one batched call; `choices[i]`, when
        given, constrains prompt i to one of those texts (grounded decoding)."""
        ...


@runtime_checkable
class StreamableEngine(Engine, Protocol):
    """An engine a generator replica holds: it can say what weights it serves and take a
    full-weight version over a weight stream (`cls_ray.weight_sync`)."""

    sync_ranks: int
    """Ranks it joins a weight stream with (one per engine worker; 0: it cannot receive)."""

    shared_model: object | None
    """The model object it shares with other engines, when loading a version overwrites
    what those served (vLLM: one `LLM` per GPU); None when each engine owns its weights."""

    def checksum(self) -> str | None:
        """SHA-256 of the weights it serves (`weights_checksum`); None when it cannot tell."""
        ...

    def refuses(self, manifest: Sequence[TensorSpec]) -> str | None:
        """Why a stream with `manifest` cannot land in this model; None when it can."""
        ...

    def stream_in(
        self,
        rdv: Rendezvous,
        rank: int,
        manifest: Sequence[TensorSpec],
        bucket_bytes: int,
        version: str,
    ) -> tuple[StreamableEngine, dict]:
        """An engine for `version` whose weights arrive over the stream, and what it
        received (`{"stream": [hash per worker], "checksum"?: ...}`)."""
        ...
