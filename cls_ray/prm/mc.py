"""Monte Carlo step labels (Math-Shepherd): from every step prefix, rollouts of the current
model with RGR against the question's reference answers. Needs no verifier and no world, only
final answers, so it labels steps on any task; soft, hard, relative (the progress a step
makes) or counted in steps (detours and first errors)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cls_ray import console
from cls_ray.answers import EXACT, AnswerCheck
from cls_ray.prm.labels import Label, StepExample
from cls_ray.rgr import run_rgr
from cls_ray.steps import parse_answer

# With `steps`: a step that brings the answer more than this many steps nearer skipped a hop.
# On the embedded default's held-out trajectories (4 rollouts) 1.25 and 1.5 agree: 10 of 44
# skipped hops more found wrong, no right step lost.
LEAP = 1.5


def mc_labels(
    examples: Sequence[StepExample],
    answers: Sequence[Sequence[str] | str],
    engine,
    retriever,
    rollouts: int = 4,
    temperature: float = 1.0,
    soft: bool = True,
    seed: int = 0,
    check: AnswerCheck = EXACT,
    progress: bool = False,
    chunk: int = 1024,
    relative: bool = False,
    tolerance: float = 0.25,
    agree: bool = False,
    steps: bool = False,
    **rgr_options,
) -> list[StepExample]:
    """Math-Shepherd labels: from each step prefix of each example, `rollouts` completions with
    RGR; a step's label is the share of them that reach `answers[i]` (any alias, by `check`;
    soft) or whether any does (hard). An answer step is labelled by itself: right or wrong.

    `relative` judges a step by the progress it makes instead (as process advantage verifiers
    do): right when the share reached after it is not lower than before it (the question alone
    for the first step) by more than `tolerance`, wrong otherwise; a step from which, as
    before it, no rollout succeeds says nothing (None) unless an earlier step was already
    wrong (the trajectory has left the path). A model that cannot finish a skill then does not
    blame its right steps, and a wrong step the model recovers from is still a drop. With
    `agree`, a relative label stands only where the absolute (hard) one says the same: a step
    the rollouts recover from, or a right step with a noisy drop, stays unlabelled.
    With `steps` (relative), progress is also counted in steps: a step after which the
    rollouts that reach the answer need on average no fewer than half a step less than before
    it took the model no nearer (a true fact off the question's chain, a detour the rollouts
    walk around) and is wrong; one after which they need more than `LEAP` steps less leapt
    over a hop it never showed (a skipped hop) and is wrong; and so is every step after a
    wrong one: the trajectory has left the path, as a first-error label says. Rollouts run `chunk` at a time (a progress bar with `progress`)."""
    if steps and (agree or not relative):
        raise ValueError("mc steps: relative labels only, without agree (it unlabels detours)")
    gold = [(a,) if isinstance(a, str) else tuple(a) for a in answers]
    jobs: list[tuple[int, int]] = []  # (example, prefix length) to roll out
    first_of: dict[str, int] = {}  # the question alone is rolled out once per prompt
    if relative:
        for i, ex in enumerate(examples):
            if ex.prompt not in first_of:
                first_of[ex.prompt] = i
                jobs.extend([(i, 0)] * rollouts)
    for i, ex in enumerate(examples):
        for k in range(1, len(ex.completions) + 1):
            if parse_answer(ex.completions[k - 1]) is None:
                jobs.extend([(i, k)] * rollouts)
    reached: Counter = Counter()
    to_go: Counter = Counter()  # steps the successful rollouts took after the prefix, summed
    bar = console.progress("mc rollouts", len(jobs), unit="rollout", disable=not progress)
    for c in range(0, len(jobs), chunk):
        part = jobs[c : c + chunk]
        trajs = run_rgr(
            [examples[i].prompt for i, _ in part],
            engine,
            retriever,
            temperature=temperature,
            seed=seed + c,
            prefixes=[examples[i].completions[:k] for i, k in part],
            **rgr_options,
        )
        for (i, k), tr in zip(part, trajs, strict=True):
            if check(tr.answer, gold[i]):
                reached[(i, k)] += 1
                to_go[(i, k)] += len(tr.steps) - k
        bar.update(len(part))
    bar.close()
    out = []
    for i, ex in enumerate(examples):
        labels: list[Label] = []
        start = (first_of.get(ex.prompt, i), 0)
        before, left = reached[start] / rollouts, _mean_to_go(reached, to_go, start)
        for k, step in enumerate(ex.completions, start=1):
            final = parse_answer(step)
            if steps and relative and 0.0 in labels:
                labels.append(0.0)  # after a wrong step
                continue
            if final is not None:
                labels.append(float(check(final, gold[i])))
                continue
            share = reached[(i, k)] / rollouts
            now = _mean_to_go(reached, to_go, (i, k))
            if not relative:
                labels.append(share if soft else float(share > 0))
            elif before == 0 and share == 0:
                labels.append(0.0 if 0.0 in labels else None)
            else:
                label = float(share >= before - tolerance)
                # `left` and `now` are means over the successful rollouts (4 by default):
                # one detour among them can make a right step look like a leap (measured: no
                # right step of the held-out trajectories was lost to it).
                if steps and label and before > 0 and share > 0:
                    label = float(left - LEAP <= now <= left - 0.5)
                labels.append(None if agree and label != float(share > 0) else label)
            before, left = share, now
        out.append(
            StepExample(
                ex.prompt,
                list(ex.completions),
                labels,
                list(ex.evidence),
                "mc",
                {**ex.meta, "kind": ex.source},  # gold, sampled, corrupt:<kind>
            )
        )
    return out


def _mean_to_go(reached: Counter, to_go: Counter, key) -> float:
    """The mean number of steps the successful rollouts from a prefix took (inf: none)."""
    return to_go[key] / reached[key] if reached[key] else float("inf")
