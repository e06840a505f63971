"""What the model has learned, sleep after sleep: the skill ledger.

A skill is what one promoted sleep taught: the new groups it was measured on (on the world,
held-back families), with their held-out questions frozen at that moment. `base` is what the
model was built on (the task's retention questions). Every later sleep measures the current
version and its candidate on every learned skill, so the retention evidence grows with each
promoted skill; and the gate compares a candidate with each skill's best promoted score, not
only with its parent's, so losses that each stay within one sleep's bound
(`consolidate.retention_tolerance`) cannot add up over sleeps past
`consolidate.forgetting_tolerance`.

The file (`state_dir/skills.json`) holds the skills and the scores of every promoted version on
them, with a fingerprint of how they were measured (a score bars only candidates measured the
same way); it is replaced atomically under a lock, so a crash leaves the old ledger or the new
one. Deleting it resets the bars to the parent's (the skills are then learned anew).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cls_ray.storage import write_atomically
from cls_ray.world.core import family_name

BASE = "base"  # the skills the model was built on: the task's retention questions
# Scores are shares of questions, and 0.89 - 0.87 is 0.020000000000000018: a drop of exactly
# the tolerance is allowed when it exceeds it by no more than this.
EPS = 1e-9


@dataclass(frozen=True)
class Skill:
    name: str  # the version whose sleep taught it (`base`: what the model was built on)
    groups: tuple[str, ...]
    questions: tuple[str, ...]  # frozen held-out questions, measured after every sleep


class SkillLedger:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, cfg) -> SkillLedger:
        return cls(cfg.state_path / "skills.json")

    def _read(self) -> dict:
        if not self.path.exists():
            return {"skills": {}, "scores": {}}
        return json.loads(self.path.read_text())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time from read to rename (a sleep, a benchmark, the CLI)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f"{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def skills(self) -> list[Skill]:
        """The learned skills, oldest first (`base` is implicit: the retention questions)."""
        return [
            Skill(name, tuple(s["groups"]), tuple(s["questions"]))
            for name, s in self._read()["skills"].items()
        ]

    def learned_groups(self) -> set[str]:
        return {g for s in self.skills() for g in s.groups}

    def scores(self) -> dict[str, dict[str, float]]:
        """version → skill → its score when that version was current."""
        return {v: r["scores"] for v, r in self._read()["scores"].items()}

    def conditions(self, version: str) -> str | None:
        """What `version`'s scores were measured under (`measuring_conditions`)."""
        return self._read()["scores"].get(version, {}).get("conditions")

    def best(
        self, counts: Callable[[str], bool] = lambda _: True, conditions: str | None = None
    ) -> dict[str, tuple[float, str]]:
        """skill → (its best score, the version that had it), over the recorded versions that
        `counts` accepts (a rolled-back version's scores do not bind later candidates) and,
        given `conditions`, that were measured under them."""
        out: dict[str, tuple[float, str]] = {}
        for version, rec in self._read()["scores"].items():
            by_skill = rec["scores"]
            if not counts(version) or (conditions and rec.get("conditions") != conditions):
                continue
            for skill, score in by_skill.items():
                if score is not None and not math.isnan(score):
                    if skill not in out or score > out[skill][0]:
                        out[skill] = (score, version)
        return out

    def record(
        self,
        version: str,
        scores: Mapping[str, float],
        new: Iterable[Skill] = (),
        conditions: str | None = None,
    ) -> list[str]:
        """Keeps `version`'s scores, measured under `conditions` (a promoted version: they
        become a bar for later ones), and adds the skills it was the first to learn; returns
        the names of those added."""
        with self._locked():
            data = self._read()
            data["scores"][version] = {
                "conditions": conditions,
                "scores": {k: float(v) for k, v in scores.items()},
            }
            added = []
            for s in new:
                if s.name not in data["skills"] and s.questions:
                    data["skills"][s.name] = {
                        "groups": list(s.groups),
                        "questions": list(s.questions),
                    }
                    added.append(s.name)
            write_atomically(self.path, json.dumps(data, indent=1).encode())
        return added


def measuring_conditions(cfg, retention_questions: Sequence) -> str:
    """A fingerprint of how scores are measured: the retention questions, the RGR options and
    the engine. Bars hold only between measurements with the same one (a changed `rgr.top_k`
    or engine would otherwise lock the gate against scores no version can reach again)."""
    what = {
        "retention": sorted(q.question for q in retention_questions),
        "rgr": cfg.rgr_options(),
        "engine": [cfg.engine.kind, cfg.engine.dtype, cfg.engine.max_new_tokens],
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def new_skills(version: str, task, new_qs: Sequence, learned: set[str]) -> list[Skill]:
    """The skills a promoted sleep taught: the task's new groups among those it was measured on
    that no earlier sleep learned, with their held-out questions (frozen from now on). One per
    skill of the world's stream (`world.held_back_sequence`; a sleep that took a refused
    sleep's sessions with its own teaches two, each barred on its own score, named
    `<version>/<relation>`), else one named by the version."""
    groups = sorted({q.group for q in new_qs} & set(task.new_groups) - learned)
    world = task.world
    stream = world.skill_families() if world and world.config.held_back_sequence else []
    of = {family_name(f): rel for rel, fams in stream for f in fams}
    parts: dict[str, list[str]] = {rel: [] for rel, _ in stream}  # in the stream's order
    for g in groups:
        parts.setdefault(of.get(g, ""), []).append(g)
    parts = {label: gs for label, gs in parts.items() if gs}
    return [
        Skill(
            version if len(parts) == 1 else f"{version}/{label or 'other'}",
            tuple(gs),
            tuple(q.question for q in new_qs if q.group in gs),
        )
        for label, gs in parts.items()
    ]


def skill_questions(skills: Sequence[Skill], index: Mapping[str, object]) -> dict[str, list]:
    """skill → its frozen questions as the task's questions (`index`: question text → QA);
    a question the task no longer has is left out."""
    return {s.name: [index[q] for q in s.questions if q in index] for s in skills}


def below_best(
    after: Mapping[str, float],
    best: Mapping[str, tuple[float, str]],
    tolerance: float,
    bar: str = "its best",
) -> str | None:
    """Why a candidate is refused: the first skill it scores more than `tolerance` below that
    skill's bar (`best`: skill → (score, the version that scored it); by default each skill's
    best promoted score); None when every skill is within it."""
    for skill, score in after.items():
        if skill not in best or score is None or math.isnan(score):
            continue
        top, version = best[skill]
        if top is None or math.isnan(top):
            continue
        if top - score - tolerance > EPS:  # exactly the tolerance is allowed
            what = "retention (the base skills)" if skill == BASE else f"the skill {skill} taught"
            return (
                f"{what} fell to {score:.3f}, {top - score:.3f} below {bar} {top:.3f} "
                f"(under {version}; > {tolerance:.3f} allowed)"
            )
    return None
