"""The bodies the HTTP API accepts. Native routes refuse unknown fields; OpenAI's chat request
allows them (its clients send many optional ones)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    # Strict: a body of the wrong JSON type is refused (422), never coerced (`0` is no `false`,
    # `"3"` no 3), so what the service accepts is exactly what its OpenAPI document declares.
    model_config = ConfigDict(extra="forbid", strict=True)


class RGRRequest(_Body):
    question: str = Field(min_length=1)
    mode: str = Field("rgr", pattern="^(rgr|single|none)$")
    top_k: int | None = Field(None, ge=1, le=50)
    max_steps: int | None = Field(None, ge=1, le=32)
    temperature: float = Field(0.0, ge=0, le=5)
    best_of: int = Field(1, ge=1, le=32, description="Sample N, return the PRM's best.")
    score: bool = Field(False, description="Wait for the PRM and return the step scores.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is empty")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: str = Field(pattern="^(system|user|assistant|tool|developer)$")
    content: str | list | None = None


class ChatRequest(BaseModel):
    # OpenAI clients send many optional fields; those declared here are strict, as in `_Body`.
    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=1)


class DocumentIn(_Body):
    id: str | None = Field(None, min_length=1, max_length=64, description="At most 64 bytes.")
    text: str = Field(min_length=1, max_length=4096)
    source: str | None = Field(None, max_length=256)

    @field_validator("id")
    @classmethod
    def _id_bytes(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode()) > 64:  # Milvus counts a VARCHAR in bytes
            raise ValueError("longer than 64 bytes (UTF-8)")
        return v


class DocumentsRequest(_Body):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)
    replace: bool = Field(False, description="Overwrite ids that hold another text (else 409).")

    def rows(self, by: str) -> list[dict]:
        """The documents to store, each with who wrote it and when in its `source`."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return [
            {**d.model_dump(), "source": f"{d.source or 'api'} | by {by} at {at}"}
            for d in self.documents
        ]


class FeedbackRequest(_Body):
    rating: float | None = Field(None, ge=-1, le=1)
    corrected_steps: list[Annotated[str, Field(min_length=1, max_length=2000)]] | None = Field(
        None, max_length=32, description="At most 32 steps of at most 2,000 characters."
    )
    comment: str | None = Field(None, max_length=4000)


class SleepRequest(_Body):
    method: Literal["sft", "ppo"] | None = Field(None, description="default: the config's")


class PromoteRequest(_Body):
    version: str = Field(min_length=1, max_length=128)
    reason: str = Field("", max_length=1000)
