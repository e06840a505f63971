"""The built-in world as a task: its documents, its questions per split, exact match, and the
extras only it has (the step verifier; the world itself for corruptions, bootstrap episodes and
typed patterns).

Splits map onto the world's entity split and held-back relations: `train` draws questions from
train-side entities, `eval` from held-out entities (all families, or the ones asked for), and
`retention` from held-out entities of the families the model was built on. A group is a family's
name (`employer`, `mentor.employer`, ...); `new_groups` are the held-back families.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cls_ray.answers import EXACT, AnswerCheck
from cls_ray.task.base import QA, Split
from cls_ray.world.core import Question, World, family_name
from cls_ray.world.verifier import verify_trajectory


def world_qa(q: Question) -> QA:
    return QA(
        id=q.id,
        question=q.text,
        answers=(q.answer,),
        support_ids=tuple(q.support_ids),
        steps=tuple(f.text for f in q.chain),
        group=family_name(q.family),
    )


class WorldTask:
    def __init__(self, world: World, check: AnswerCheck = EXACT):
        self.world, self.check = world, check
        self.name = f"world-seed{world.config.seed}"
        self.new_groups = tuple(family_name(f) for f in world.held_back_families)
        self._family = {family_name(f): f for f in world.families}
        self._by_id: dict[str, Question] = {}

    def documents(self) -> Iterator[dict]:
        for d in self.world.documents:
            yield {"id": d.id, "text": d.text}

    def _families(self, split: Split, groups: Sequence[str] | None):
        base = self.world.trained_families if split == "retention" else None
        if groups is None:
            return base
        unknown = [g for g in groups if g not in self._family]
        if unknown:
            raise ValueError(f"not a family of the world: {unknown}")
        wanted = set(groups)
        return [f for f in (base or self.world.families) if family_name(f) in wanted]

    def questions(
        self,
        split: Split,
        groups: Sequence[str] | None = None,
        per_group: int | None = None,
        seed: int = 0,
    ) -> list[QA]:
        world_split = "train" if split == "train" else "heldout"
        qs = self.world.questions(
            world_split, self._families(split, groups), per_family=per_group or 10**6, seed=seed
        )
        self._by_id.update((q.id, q) for q in qs)
        return [world_qa(q) for q in qs]

    def groups(self, split: Split) -> list[str]:
        fams = self.world.trained_families if split == "retention" else self.world.families
        return [family_name(f) for f in fams]

    def question_of(self, qa: QA) -> Question:
        """The world's own question behind `qa` (one this task handed out)."""
        return self._by_id[qa.id]

    def verify(self, qa: QA, steps: Sequence[str]) -> list[bool]:
        return [x.correct for x in verify_trajectory(self.question_of(qa), list(steps))]

    def is_right(self, prediction: str | None, qa: QA) -> bool:
        return self.check(prediction, qa.answers)
