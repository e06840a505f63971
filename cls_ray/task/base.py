"""What a task is: documents to remember, questions with reference answers per split, and an
answer check. The built-in world is one task (`cls_ray.task.world_task`); a folder of JSONL
files is another (`cls_ray.task.files`); everything downstream sees only this interface.

Splits: `train` (questions sessions and training may draw on), `eval` (held out: benchmarks
and the new-skill measure) and `retention` (answers that must not get worse: the gate's
evidence). A question's `group` is the family benchmarks report apart and consolidation may
learn as a new skill; `new_groups` names the groups the model has not learned yet.

Optional extras only some tasks have are attributes that are None elsewhere: `verify` (exact
step labels) and `world` (the built-in world, for its corruptions, episodes and typed
patterns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from cls_ray.answers import AnswerCheck

Split = Literal["train", "eval", "retention"]
SPLITS: tuple[Split, ...] = ("train", "eval", "retention")


@dataclass(frozen=True)
class QA:
    """One question with every accepted answer; `support_ids` (one document per hop, in order),
    gold `steps` (one per hop) and `group` when the task knows them."""

    id: str
    question: str
    answers: tuple[str, ...]
    support_ids: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    group: str = ""

    @property
    def answer(self) -> str:
        """The first (preferred) answer."""
        return self.answers[0]

    @property
    def hops(self) -> int:
        return len(self.support_ids) or len(self.steps) or 1

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
        }
        if self.support_ids:
            row["support_ids"] = list(self.support_ids)
        if self.steps:
            row["steps"] = list(self.steps)
        if self.group:
            row["group"] = self.group
        return row


# Exact labels of a trajectory's steps (True: correct), where the task can verify them.
Verifier = Callable[[QA, Sequence[str]], list[bool]]


@runtime_checkable
class Task(Protocol):
    name: str
    check: AnswerCheck
    new_groups: tuple[str, ...]
    verify: Verifier | None
    world: Any  # the built-in World on the world task, else None

    def documents(self) -> Iterator[dict]:
        """Every document as `{"id", "text"}`."""
        ...

    def questions(
        self,
        split: Split,
        groups: Sequence[str] | None = None,
        per_group: int | None = None,
        seed: int = 0,
    ) -> list[QA]:
        """Questions of `split` (of `groups` only, when given), at most `per_group` of each
        group; deterministic for a seed."""
        ...

    def groups(self, split: Split) -> list[str]:
        """The groups of `split`, in the task's order."""
        ...

    def is_right(self, prediction: str | None, qa: QA) -> bool:
        """Whether `prediction` answers `qa` by the task's check."""
        ...


class TaskError(ValueError):
    """A task that cannot be read; the message names the file and line."""
