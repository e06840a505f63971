"""Extraction f(τ): a scored session becomes structured artifacts, and the PRM gates them.

- `pattern`: the reasoning chain with its entities replaced by variables: typed on the world
  (`{person_1}`, `{org_1}`, ...), numbered on any other text (`{entity_1}`, `{number_1}`: the
  names and numbers a step takes from the question or from its retrieved documents), a reusable
  procedure for a question's shape;
- `subplan`: (state, retrieved documents) → next step, one per step;
- `failure`: a low-scoring step, with the step that should have come instead where a user's
  correction says so.

Every artifact names its source session and carries the step scores and R(τ). `gate` keeps
A_good: patterns of trajectories whose R(τ) reaches `min_r_tau`, subplans whose own step score
reaches `min_step_score` (in a trajectory that reaches `min_r_tau` when `whole_trajectory`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from cls_ray.steps import parse_answer
from cls_ray.world.verifier import parse_fact

Kind = Literal["pattern", "subplan", "failure"]


@dataclass
class Artifact:
    kind: Kind
    content: dict
    session_id: str
    step_scores: list[float]
    r_tau: float | None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_dict(session) -> dict:
    return session if isinstance(session, dict) else session.model_dump()


# A name or a number in running text: capitalised words or numbers, joined by the small words
# names contain ("University of Oslo", "Jean de La Fontaine", "30 July 1970").
_TOKEN = r"(?:[A-Z][\w'’.&-]*|\d[\d,.:/-]*)"
_SPAN = re.compile(
    rf"(?<![\w{{}}]){_TOKEN}(?:\s+(?:(?:of|the|de|del|la|le|von|van|der|&)\s+)*{_TOKEN})*"
)
# Capitalised only because they begin a sentence or a question.
_LEADING = frozenset(
    "A An And As At But By For From He Her His How I If In Is It Its Of On Or She So That The "
    "Their There These They This Those To Was We Were What When Where Which Who Whom Whose Why "
    "Are Did Do Does Has Have Had Can Could Would Will Yes No".split()
)


def spans(text: str) -> list[str]:
    """The names and numbers in `text`, in order (sentence-initial small words dropped)."""
    out = []
    for m in _SPAN.finditer(text):
        words = m.group(0).rstrip(".,:;").split()
        while words and words[0] in _LEADING:
            words = words[1:]
        if words and len(" ".join(words)) > 1:
            out.append(" ".join(words))
    return out


def _substitute(text: str, names: Mapping[str, str]) -> str:
    """Every whole occurrence of a name replaced by its variable, longest names first."""
    if not names:
        return text
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![\w{{}}])(?:{alt})(?![\w}}])", lambda m: names[m.group(0)], text)


def abstract_text(question: str, steps: Sequence[str], sources: Iterable[str] = ()) -> dict | None:
    """f(τ)'s pattern on any text: the names and numbers a step takes from the question or from
    `sources` (its retrieved documents) become numbered variables (`{entity_1}`, `{number_1}`),
    the same name the same variable everywhere; the answer is a variable where it is such a
    name (a "yes" stays). None when nothing in the chain is taken from anywhere, or when it
    has no step before the answer."""
    seen = [question, *sources]
    names: dict[str, str] = {}
    counts: dict[str, int] = {}

    def var(name: str) -> None:
        if name not in names:
            t = "number" if name[0].isdigit() else "entity"
            counts[t] = counts.get(t, 0) + 1
            names[name] = f"{{{t}_{counts[t]}}}"

    body = [s for s in steps if parse_answer(s) is None]
    if not body:
        return None
    for step in steps:
        answer = parse_answer(step)
        found = spans(step) if answer is None else [answer.rstrip(" .")]
        for name in found:
            if name and any(_contains(t, name) for t in seen):
                var(name)
    if not any(v in _substitute(question, names) for v in names.values()):
        return None
    return {
        "question": _substitute(question, names),
        "steps": [_substitute(s, names) for s in steps],
        "relations": [],
    }


def _contains(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def abstract_chain(
    question: str,
    steps: Sequence[str],
    type_of: Callable[[str], str | None] | None = None,
    sources: Iterable[str] = (),
) -> dict | None:
    """The chain with entities as variables, or None. With `type_of` (the world), every step
    must be a world fact or the answer and variables are typed (numbered per type in order of
    appearance; the same entity keeps its variable everywhere); without it, the names a step
    takes from the question or `sources` become variables (`abstract_text`)."""
    if type_of is None:
        return abstract_text(question, steps, sources)
    names: dict[str, str] = {}
    counts: dict[str, int] = {}

    def var(name: str) -> str:
        if name not in names:
            t = (type_of(name) if type_of else None) or "entity"
            counts[t] = counts.get(t, 0) + 1
            names[name] = f"{{{t}_{counts[t]}}}"
        return names[name]

    relations, out_steps = [], []
    for step in steps:
        answer = parse_answer(step)
        if answer is not None:
            out_steps.append(f"the answer is {var(answer.rstrip(' .'))} .")
            continue
        fact = parse_fact(step)
        if fact is None:
            return None
        s, o = var(fact.subject), var(fact.object)
        relations.append(fact.relation)
        out_steps.append(step.replace(fact.subject, s, 1).rsplit(fact.object, 1)[0] + o + " .")
    if not relations:
        return None
    q = question
    for name in sorted(names, key=len, reverse=True):
        q = q.replace(name, names[name])
    return {"question": q, "steps": out_steps, "relations": relations}


def extract(
    session,
    doc_texts: Mapping[str, str] | None = None,
    type_of: Callable[[str], str | None] | None = None,
    min_step_score: float = 0.5,
) -> list[Artifact]:
    """f(τ) for one scored session (a `Session` or its dict). `doc_texts` maps retrieved ids to
    their text for subplans (ids are kept when a text is unknown) and for the names patterns
    take from documents; `type_of` names an entity's type for patterns (the world)."""
    s = _as_dict(session)
    steps = [st["text"] for st in s.get("steps") or []]
    scores = list(s.get("prm_step_scores") or [])
    if scores and len(scores) != len(steps):
        raise ValueError(f"session {s['id']}: {len(scores)} scores for {len(steps)} steps")
    common = {"session_id": s["id"], "step_scores": scores, "r_tau": s.get("r_tau")}
    out: list[Artifact] = []
    docs_of = doc_texts or {}
    sources = [
        docs_of[r["id"]]
        for st in s.get("steps") or []
        for r in st.get("retrieved") or []
        if r["id"] in docs_of
    ]
    pattern = abstract_chain(s["question"], steps, type_of, sources)
    if pattern is not None:
        out.append(Artifact("pattern", pattern, **common))
    corrected: list[str] = []
    for fb in s.get("feedback") or []:
        if fb.get("corrected_steps"):
            corrected = list(fb["corrected_steps"])
    for i, st in enumerate(s.get("steps") or []):
        state = {"question": s["question"], "steps": steps[:i]}
        docs = [docs_of.get(r["id"], r["id"]) for r in st.get("retrieved") or []]
        score = scores[i] if scores else None
        if score is None or score >= min_step_score:
            out.append(
                Artifact(
                    "subplan",
                    {**state, "docs": docs, "next": st["text"]},
                    **common,
                    meta={"step": i, "score": score},
                )
            )
        else:
            instead = corrected[i] if i < len(corrected) and corrected[i] != st["text"] else None
            out.append(
                Artifact(
                    "failure",
                    {**state, "docs": docs, "step": st["text"], "instead": instead},
                    **common,
                    meta={"step": i, "score": score},
                )
            )
    return out


def gate(
    artifacts: Sequence[Artifact],
    min_r_tau: float = 0.5,
    min_step_score: float = 0.5,
    whole_trajectory: bool = True,
) -> list[Artifact]:
    """A_good: what the PRM trusts. Unscored artifacts are never trusted."""
    good = []
    for a in artifacts:
        if a.r_tau is None:
            continue
        if a.kind == "pattern" and a.r_tau >= min_r_tau:
            good.append(a)
        elif a.kind == "subplan":
            score = a.meta.get("score")
            if (
                score is not None
                and score >= min_step_score
                and (not whole_trajectory or a.r_tau >= min_r_tau)
            ):
                good.append(a)
    return good


def pattern_text(a: Artifact) -> str:
    """How a pattern is stored in the episodic collection: searchable by the question's shape,
    read by the model as a worked procedure."""
    c = a.content
    return f"procedure for {c['question']} : " + " ".join(c["steps"])
