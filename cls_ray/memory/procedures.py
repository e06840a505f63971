"""Procedures in episodic memory: trusted reasoning chains in Milvus, read by RGR before any
weight changes (the fast path of consolidation).

A procedure is a chain with variables, typed on the world ("what is the rival of the mentor of
{person_1} ?" → "the mentor of {person_1} is {person_2} .", "the rival of {person_2} is
{person_3} .", "the answer is {person_3} ."), numbered on other text (`{entity_1}`,
`{number_1}`). Sleep folds the gated patterns of many sessions into one procedure per question
shape (`cls_ray.consolidate.episodic`) and upserts it into the `episodic` collection,
keyed by that shape, so a later sleep replaces it.

RGR looks the procedure up once per question (`StoreRetriever.plans`), binds its variables to
the question and to the steps written so far, and, while the steps follow it, retrieves with the
procedure's next step instantiated as far as it is known ("the rival of Dana Reyes is"): the
query names the relation the model has not learned to ask for. The model still writes every
step from the retrieved documents; a step that leaves the procedure ends its guidance.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_VAR = re.compile(r"\{([a-z]+_\d+)\}")
_PREFIX = "procedure for "
_SEP = " || "


@dataclass(frozen=True)
class Pattern:
    question: str
    steps: tuple[str, ...]
    support: int = 1
    r_tau: float = 0.0

    @property
    def id(self) -> str:
        """One procedure per question shape: a later sleep replaces it."""
        return "p-" + hashlib.sha1(self.question.encode()).hexdigest()[:16]

    @property
    def text(self) -> str:
        """`procedure for <question> : <steps>`; steps of the compact format (each one
        sentence ending in " .") are joined by spaces, any others by `_SEP`."""
        compact = all(s.endswith(" .") and s.count(" .") == 1 for s in self.steps)
        return f"{_PREFIX}{self.question} : " + (" " if compact else _SEP).join(self.steps)

    @property
    def source(self) -> str:
        return f"pattern support={self.support} r_tau={self.r_tau:.3f}"


def parse_pattern(text: str) -> Pattern | None:
    """The inverse of `Pattern.text` (support and R(τ) are not in the text). The question
    ends at its "?" (else at the first " : ")."""
    if not text.startswith(_PREFIX):
        return None
    rest = text[len(_PREFIX) :]
    cut = rest.find("? : ")
    if cut >= 0:
        question, body = rest[: cut + 1], rest[cut + 4 :]
    elif " : " in rest:
        question, body = rest.split(" : ", 1)
    else:
        return None
    if _SEP in body:
        steps = tuple(s.strip() for s in body.split(_SEP) if s.strip())
    else:
        steps = tuple(s.strip() + " ." for s in body.strip().split(" .") if s.strip())
    return Pattern(question, steps) if steps else None


def _regex(template: str) -> re.Pattern:
    out, seen, pos = [], set(), 0
    for m in _VAR.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def bind(template: str, text: str, bound: dict[str, str] | None = None) -> dict[str, str] | None:
    """The variables of `template` that make it `text`, consistent with `bound`; None when
    `text` does not have the template's shape."""
    m = _regex(template).fullmatch(text.strip())
    if m is None:
        return None
    out = dict(bound or {})
    for name, value in m.groupdict().items():
        if out.setdefault(name, value) != value:
            return None
    return out


def hint_query(pattern: Pattern | None, question: str, steps: Sequence[str]) -> str | None:
    """The procedure's next step, instantiated up to its first unknown variable, while the
    question and the steps so far follow the procedure; None otherwise (and for the answer
    step, which needs no retrieval)."""
    if pattern is None or len(steps) >= len(pattern.steps):
        return None
    b = bind(pattern.question, question)
    for template, step in zip(pattern.steps, steps, strict=False):
        if b is None:
            return None
        b = bind(template, step, b)
    if b is None:
        return None
    nxt = pattern.steps[len(steps)]
    if nxt.startswith("the answer is"):
        return None
    out, pos = [], 0
    for m in _VAR.finditer(nxt):
        out.append(nxt[pos : m.start()])
        if m.group(1) not in b:
            break
        out.append(b[m.group(1)])
        pos = m.end()
    else:
        out.append(nxt[pos:])
    return "".join(out).strip() or None


def index_patterns(store, embedder, patterns: Sequence[Pattern]) -> int:
    """Upserts the procedures into the episodic collection; returns how many."""
    if not patterns:
        return 0
    texts = [p.text for p in patterns]
    store.upsert(
        [p.id for p in patterns],
        texts,
        embedder.embed(texts),
        [p.source for p in patterns],
        kind="episodic",
    )
    store.flush("episodic")
    return len(patterns)


def lookup(store, embedder, questions: Sequence[str], k: int = 3) -> list[Pattern | None]:
    """For each question, the first of its `k` nearest procedures whose shape it has."""
    if not questions or store.count("episodic") == 0:
        return [None] * len(questions)
    vectors = embedder.embed(list(questions)) if store.search_mode != "bm25" else None
    hits = store.search(vectors, list(questions), k, kind="episodic")
    out: list[Pattern | None] = []
    for q, row in zip(questions, hits, strict=True):
        found = None
        for h in row:
            p = parse_pattern(h.text)
            if p is not None and bind(p.question, q) is not None:
                found = p
                break
        out.append(found)
    return out
