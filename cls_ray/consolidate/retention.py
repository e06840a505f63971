"""The frozen suite of trusted steps: step-level retention evidence on any task.

On the world, the gate's step measure is a fixed set of bootstrap episodes. Elsewhere it is
this suite: when a sleep's candidate is promoted, the steps it was taught from served sessions
(the gated subplans of A_good: question, steps so far, retrieved documents → the next step)
join the suite, up to `consolidate.retention_suite` steps in all. Entries are written once and
never changed, so every later sleep measures the same steps: the next-step accuracy of the
current version and of its candidate on what earlier sleeps taught (a candidate that forgets
an earlier sleep's skill loses here even when the task's retention questions do not cover it).
The file (`state_dir/retention_suite.jsonl`) is replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cls_ray.consolidate.extract import Artifact
from cls_ray.storage import write_atomically
from cls_ray.world.episodes import step_accuracy


@dataclass(frozen=True)
class TrustedStep:
    question: str
    docs: tuple[str, ...]
    steps: tuple[str, ...]  # the steps before it
    target: str  # the step the PRM trusted
    version: str  # the version whose sleep taught it
    session_id: str


class RetentionSuite:
    def __init__(self, path: Path, limit: int):
        self.path, self.limit = Path(path), limit

    @classmethod
    def of(cls, cfg) -> RetentionSuite:
        return cls(cfg.state_path / "retention_suite.jsonl", cfg.consolidate.retention_suite)

    def steps(self) -> list[TrustedStep]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                out.append(
                    TrustedStep(**{**d, "docs": tuple(d["docs"]), "steps": tuple(d["steps"])})
                )
        return out

    def add(self, good: Sequence[Artifact], version: str) -> int:
        """Appends the trusted subplans of `good` (taught to `version`) that are new, while the
        suite has room; returns how many joined."""
        have = self.steps()
        seen = {(s.question, s.steps, s.target) for s in have}
        new: list[TrustedStep] = []
        for a in good:
            if a.kind != "subplan" or len(have) + len(new) >= self.limit:
                continue
            c = a.content
            step = TrustedStep(
                c["question"], tuple(c["docs"]), tuple(c["steps"]), c["next"], version, a.session_id
            )
            if (step.question, step.steps, step.target) not in seen:
                seen.add((step.question, step.steps, step.target))
                new.append(step)
        if new:
            self._write([*have, *new])
        return len(new)

    def _write(self, steps: Sequence[TrustedStep]) -> None:
        text = "".join(json.dumps(asdict(s)) + "\n" for s in steps)
        write_atomically(self.path, text.encode())


def next_step_accuracy(engine, steps: Sequence[TrustedStep], grounded: bool = False) -> float:
    """Share of `steps` whose greedy next step, written by `engine` (any `Engine`) in its own
    format, equals the trusted one (`step_accuracy`, which the world's episodes use too); NaN
    for none: no evidence."""
    return step_accuracy(engine, steps, grounded) if steps else float("nan")
