"""Step labels for the PRM, from three sources in one format.

A labelled trajectory is `{prompt, completions: [step, ...], labels: [...], evidence: [...]}`
(TRL's stepwise-supervision format, plus per-step evidence): `labels[i]` is 1.0 for a correct
step, 0.0 for a wrong one, a fraction for a soft Monte Carlo label, or None when no source
trusts a label for it (the step is then ignored by the loss). `evidence[i]` is the retrieved
document the step restates best ("" when none does): the PRM reads it next to the step.

- **verifier**: the built-in world's verifier labels every step exactly (ground truth for
  evaluation, and an option for training);
- **mc**: Monte Carlo in the manner of Math-Shepherd: from every step prefix, roll out N
  completions with the current model and RGR; the step's soft label is the share that reach the
  known answer, its hard label whether any does. Needs only final answers, so it works on any
  corpus (`prm/mc.py`);
- **human**: ratings and corrected steps from the feedback endpoint; they win where sources
  disagree.

Trajectories come from sampling the model with temperature and from corrupting gold chains
(a wrong entity, a wrong relation, a hallucinated object, a skipped hop, an early or wrong
answer), so that good and bad steps are both plentiful.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from cls_ray.rgr import run_rgr
from cls_ray.session import Feedback
from cls_ray.steps import answer_step, overlap_f1, parse_answer
from cls_ray.world.core import RELATIONS, Question, World
from cls_ray.world.verifier import parse_fact, verify_trajectory

Label = float | None


@dataclass
class StepExample:
    prompt: str
    completions: list[str]
    labels: list[Label]
    evidence: list[str]
    source: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StepExample:
        return cls(**d)


# ------------------------------------------------------------------------------------------
# Evidence
# ------------------------------------------------------------------------------------------
def evidence_for(step: str, docs: Sequence[str], min_overlap: float = 0.5) -> str:
    """The document `step` restates best (token-overlap F1 at least `min_overlap`), else ""."""
    if parse_answer(step) is not None:
        return ""
    best, best_f1 = "", 0.0
    for d in docs:
        f1 = overlap_f1(step, d)
        if f1 > best_f1:
            best, best_f1 = d, f1
    return best if best_f1 >= min_overlap else ""


def step_evidence(
    steps: Sequence[str], docs: Sequence[Sequence[str]] | Sequence[str] | None
) -> list[str]:
    if not docs:
        return [""] * len(steps)
    if isinstance(docs[0], str):
        return [evidence_for(s, docs) for s in steps]  # type: ignore[arg-type]
    return [evidence_for(s, d) for s, d in zip(steps, docs, strict=True)]  # type: ignore[arg-type]


def world_docs_for(world: World, step: str) -> list[str]:
    """What a retriever brings for a step in the world: the documents of the stated fact's
    subject and relation (the true fact, when the step states a false one)."""
    fact = parse_fact(step)
    if fact is None:
        return []
    docs = []
    true = world.facts.get((fact.subject, fact.relation))
    if true is not None:
        docs.append(true.text)
    return docs


# ------------------------------------------------------------------------------------------
# Verifier labels and corrupted chains
# ------------------------------------------------------------------------------------------
def verifier_example(
    question: Question,
    steps: Sequence[str],
    docs: Sequence[Sequence[str]] | None = None,
    world: World | None = None,
    source: str = "verifier",
) -> StepExample:
    """`steps` labelled by the world's verifier; evidence from each step's `docs[i]` (what was
    retrieved for it) or, without them, from the world."""
    labels = [1.0 if lab.correct else 0.0 for lab in verify_trajectory(question, list(steps))]
    if docs is None:
        assert world is not None, "evidence needs the steps' documents or the world"
        docs = [world_docs_for(world, s) for s in steps]
    evidence = [evidence_for(s, d) for s, d in zip(steps, docs, strict=True)]
    return StepExample(
        question.text,
        list(steps),
        labels,
        evidence,
        source,
        {
            "question_id": question.id,
            "family": "-".join(question.family),
            "hops": question.hops,
            "held_back": question.held_back,
            "correct": bool(labels) and all(x == 1.0 for x in labels),
        },
    )


class Corruptor:
    """Wrong versions of gold chains: each names the step where the chain goes wrong."""

    KINDS = (
        "wrong_entity",
        "wrong_relation",
        "wrong_object",
        "skipped_hop",
        "early_answer",
        "wrong_answer",
    )

    def __init__(self, world: World):
        self.world = world
        self.by_part: dict[tuple[str, str], list[str]] = {}
        for name, etype in world.entities.items():
            for part in name.split():
                self.by_part.setdefault((etype, part), []).append(name)
        self.relations_of: dict[str, list[str]] = {}
        for subject, rel in world.facts:
            self.relations_of.setdefault(subject, []).append(rel)

    def lookalike(self, name: str, rng: random.Random) -> str | None:
        etype = self.world.entities.get(name)
        if etype is None:
            return None
        pool = sorted(
            {n for part in name.split() for n in self.by_part.get((etype, part), []) if n != name}
        )
        return rng.choice(pool) if pool else None

    def _continue(self, start: str, family: Sequence[str]) -> list[str] | None:
        """Steps that follow `family` from `start` through the world, then the answer."""
        chain = self.world.follow(start, tuple(family)) if family else ()
        if chain is None:
            return None
        steps = [f.text for f in chain]
        return steps + [answer_step(chain[-1].object if chain else start)]

    def corrupt(self, q: Question, kind: str, rng: random.Random) -> list[str] | None:
        """A wrong trajectory for `q`, or None when `kind` does not apply to it."""
        gold = [f.text for f in q.chain]
        hops = len(q.chain)
        i = rng.randrange(hops)
        fact = q.chain[i]
        if kind == "wrong_entity":  # the hop starts from a look-alike of its subject
            other = self.lookalike(fact.subject, rng)
            if other is None:
                return None
            rest = self._continue(other, q.family[i:])
            return None if rest is None else gold[:i] + rest
        if kind == "wrong_relation":  # a true fact about the right subject, wrong relation
            rels = [r for r in self.relations_of.get(fact.subject, []) if r != fact.relation]
            if not rels:
                return None
            wrong = self.world.facts[(fact.subject, rng.choice(sorted(rels)))]
            rest = self._continue(wrong.object, q.family[i + 1 :])
            return None if rest is None else gold[:i] + [wrong.text] + rest
        if kind == "wrong_object":  # a false fact: the right subject and relation, wrong object
            other = self.lookalike(fact.object, rng)
            if other is None:
                return None
            noun = RELATIONS[fact.relation].noun
            rest = self._continue(other, q.family[i + 1 :])
            if rest is None:
                rest = [answer_step(other)] if i == hops - 1 else None
            if rest is None:
                return None
            return gold[:i] + [f"the {noun} of {fact.subject} is {other} ."] + rest
        if kind == "skipped_hop":
            if hops < 2:
                return None
            j = rng.randrange(hops - 1)
            return gold[:j] + gold[j + 1 :] + [answer_step(q.answer)]
        if kind == "early_answer":
            if hops < 2:
                return None
            j = rng.randrange(1, hops)
            return gold[:j] + [answer_step(q.chain[j - 1].object)]
        if kind == "wrong_answer":
            other = self.lookalike(q.answer, rng)
            return None if other is None else gold + [answer_step(other)]
        raise ValueError(f"unknown corruption {kind!r}; expected one of {self.KINDS}")


def gold_and_corrupted(
    world: World, questions: Sequence[Question], per_question: int = 2, seed: int = 0
) -> list[StepExample]:
    """For each question: its gold chain and `per_question` corruptions, verifier-labelled."""
    rng = random.Random(seed)
    c = Corruptor(world)
    out = []
    for q in questions:
        out.append(verifier_example(q, q.gold_steps, world=world, source="gold"))
        kinds = list(Corruptor.KINDS)
        rng.shuffle(kinds)
        made = 0
        for kind in kinds:
            if made == per_question:
                break
            steps = c.corrupt(q, kind, rng)
            if steps is None or steps == q.gold_steps:
                continue
            ex = verifier_example(q, steps, world=world, source=f"corrupt:{kind}")
            out.append(ex)
            made += 1
    return out


# ------------------------------------------------------------------------------------------
# Sampled trajectories (verifier-labelled) and Monte Carlo labels
# ------------------------------------------------------------------------------------------
def sampled_examples(
    questions: Sequence[Question],
    engine,
    retriever,
    samples: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    **rgr_options,
) -> list[StepExample]:
    """`samples` RGR trajectories per question at `temperature`, verifier-labelled, with the
    documents each step had in context as its evidence."""
    qs = [q for q in questions for _ in range(samples)]
    trajs = run_rgr(
        [q.text for q in qs],
        engine,
        retriever,
        temperature=temperature,
        seed=seed,
        **rgr_options,
    )
    return [
        verifier_example(
            q, tr.step_texts, [[d.text for d in s.retrieved] for s in tr.steps], source="sampled"
        )
        for q, tr in zip(qs, trajs, strict=True)
    ]


# ------------------------------------------------------------------------------------------
# Human labels and merging
# ------------------------------------------------------------------------------------------
def human_examples(
    sessions: Sequence[dict], evidence_of: Callable[[str, dict], str] | None = None
) -> list[StepExample]:
    """Labels from trusted feedback on served sessions: a curator's or admin's (a user's
    ratings and corrections are evidence, not truth; they never override the PRM's labels).
    Corrected steps are right; the original steps agree with them up to the first difference,
    which is wrong, as is everything after it. A rating alone (no correction) labels the whole
    trajectory when positive, and only its final step when negative (which step failed is
    unknown). `evidence_of(step, session)` finds a step's evidence (among what its session
    retrieved)."""
    ev = evidence_of or (lambda step, session: "")
    out: list[StepExample] = []
    for s in sessions:
        steps = [st["text"] for st in s.get("steps") or []]

        def add(completions: list[str], labels: list[Label], s=s) -> None:
            out.append(
                StepExample(
                    s["question"],
                    list(completions),
                    labels,
                    [ev(x, s) for x in completions],
                    "human",
                    {"session_id": s["id"]},
                )
            )

        for fb in s.get("feedback") or []:
            if not Feedback.model_validate(fb).trusted:
                continue
            fixed = fb.get("corrected_steps")
            if fixed:
                add(fixed, [1.0] * len(fixed))
                labels: list[Label] = []
                diverged = False
                for j, st in enumerate(steps):
                    diverged = diverged or j >= len(fixed) or st != fixed[j]
                    labels.append(0.0 if diverged else 1.0)
                if steps and diverged:
                    add(steps, labels)
            elif fb.get("rating") is not None and steps:
                r = float(fb["rating"])
                if r >= 0.5:
                    add(steps, [1.0] * len(steps))
                elif r <= -0.5:
                    add(steps, [None] * (len(steps) - 1) + [0.0])
    return out


def merge_labels(
    examples: Sequence[StepExample], consensus: bool = False, threshold: float = 0.5
) -> list[StepExample]:
    """One example per (prompt, steps). Human labels win over automatic ones step by step. With
    `consensus`, a step keeps an automatic label only where the automatic sources that labelled
    it agree (hard labels at `threshold`); the others become None."""
    groups: dict[tuple, list[StepExample]] = {}
    for ex in examples:
        groups.setdefault((ex.prompt, tuple(ex.completions)), []).append(ex)
    out = []
    for (_, steps), exs in groups.items():
        human = [e for e in exs if e.source == "human"]
        auto = [e for e in exs if e.source != "human"]
        labels: list[Label] = []
        for j in range(len(steps)):
            h = [e.labels[j] for e in human if e.labels[j] is not None]
            a = [e.labels[j] for e in auto if e.labels[j] is not None]
            if h:
                labels.append(h[-1])
            elif not a:
                labels.append(None)
            elif consensus and len({x >= threshold for x in a}) > 1:
                labels.append(None)
            else:
                labels.append(a[0])
        base = auto[0] if auto else human[0]
        sources = "+".join(sorted({e.source for e in exs}))
        out.append(
            StepExample(base.prompt, list(steps), labels, list(base.evidence), sources, base.meta)
        )
    return out
