"""The one session record: written by serving, kept by the replay buffer, read by the trainers.

Versioned (`schema_version`); every field a later stage needs is here: the question, each step
with its retrieval query, retrieved ids and scores, citations, token ids and behaviour log-probs,
the answer, the model version that produced it, PRM step scores and R(tau), user feedback and
timestamps.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrievedRef(_Record):
    id: str
    score: float


class SessionStep(_Record):
    text: str
    query: str | None = None
    retrieved: list[RetrievedRef] = Field(default_factory=list)
    cited: list[str] = Field(default_factory=list)
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    is_answer: bool = False


Role = Literal["anonymous", "user", "curator", "admin"]  # each includes the ones before
TRUSTED_ROLES: frozenset[str] = frozenset({"curator", "admin"})  # their feedback teaches as given


class Feedback(_Record):
    rating: float | None = Field(None, ge=-1, le=1, description="-1 bad .. 1 good")
    corrected_steps: list[str] | None = None
    comment: str | None = Field(None, max_length=4000)
    at: float = Field(default_factory=time.time)
    by: str | None = Field(None, description="The key that gave it (None: anonymous).")
    role: Role = Field(
        "anonymous",
        description="The giver's role: only a curator's (or admin's) corrections and ratings "
        "are trusted for training; the others are evidence that goes through the PRM's gate.",
    )

    @property
    def trusted(self) -> bool:
        return self.role in TRUSTED_ROLES


class Session(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    question: str = Field(min_length=1)
    mode: Literal["rgr", "single", "none"] = "rgr"
    steps: list[SessionStep] = Field(default_factory=list)
    answer: str | None = None
    model_version: str
    prm_step_scores: list[float] | None = None
    r_tau: float | None = None
    prm_version: str | None = Field(None, description="The PRM that scored the steps.")
    feedback: list[Feedback] = Field(default_factory=list)
    owner: str | None = Field(None, description="The key that asked (None: anonymous).")
    owner_token_sha256: str | None = Field(
        None, description="SHA-256 of the session's feedback token, which only the asker got."
    )
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None

    @classmethod
    def from_trajectory(cls, tr, session_id: str | None = None, started_at: float | None = None):
        """A session from an RGR `Trajectory`."""
        now = time.time()
        steps = [
            SessionStep(
                text=s.text,
                query=s.query,
                retrieved=[RetrievedRef(id=d.id, score=d.score) for d in s.retrieved],
                cited=list(s.cited),
                token_ids=list(s.token_ids),
                logprobs=list(s.logprobs),
                is_answer=s.is_answer,
            )
            for s in tr.steps
        ]
        return cls(
            id=session_id or uuid.uuid4().hex,
            question=tr.question,
            mode=tr.mode,
            steps=steps,
            answer=tr.answer,
            model_version=tr.model_version or "unknown",
            created_at=started_at or now - tr.latency_s,
            finished_at=now,
        )
