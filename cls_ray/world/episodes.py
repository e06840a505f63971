"""Bootstrap training episodes: one next-step example, facts re-drawn every time.

An episode is a fresh little world: a question of a trained family starting from a random name
of the train side, its chain drawn at random, and the documents a retrieval at that step would
put in context: the gold fact among look-alikes (same subject with another relation, a name that
shares a part with the same relation, the entity as the object of other facts). Because the
facts change from episode to episode, the only way to the target is to read the documents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from cls_ray.steps import answer_step, grounded_choices
from cls_ray.world.core import (
    BASE_RELATIONS,
    RELATIONS,
    RELATIONS_OF,
    EntityType,
    World,
    fact_text,
    question_text,
)


@dataclass(frozen=True)
class Episode:
    question: str
    docs: list[str]
    steps: list[str]  # the steps so far
    target: str  # the next step
    family: tuple[str, ...]


class EpisodeSampler:
    """Draws episodes from the train-side names of `world`, for the given families."""

    def __init__(
        self, world: World, families: list[tuple[str, ...]], k_docs: int = 5, k_spread: int = 2
    ):
        """Contexts hold `k_docs - k_spread` to `k_docs + 1` documents, so the model reads
        any number of them rather than one fixed layout."""
        if not families:
            raise ValueError("no families to train on")
        self.families = families
        self.k_range = (max(1, k_docs - k_spread), k_docs + 1)
        self.names = world.train_names()
        self.by_part: dict[EntityType, dict[str, list[str]]] = {}
        for t, names in self.names.items():
            idx: dict[str, list[str]] = {}
            for n in names:
                for part in n.split(" "):
                    idx.setdefault(part, []).append(n)
            self.by_part[t] = idx

    def _type_of(self, rel: str) -> EntityType:
        return RELATIONS[rel].range

    def _name(self, t: EntityType, rng: random.Random, avoid: str = "") -> str:
        while True:
            n = rng.choice(self.names[t])
            if n != avoid:
                return n

    def _lookalike(self, name: str, t: EntityType, rng: random.Random) -> str:
        """A name sharing one part with `name`. People share a first or a last name equally
        often; organisations and cities mostly share their root ("Quest Works", "Quest Group"),
        as the world's look-alikes do, so telling them apart by the second part is learned."""
        parts = name.split(" ")
        if t == "person" or rng.random() < 0.25:
            rng.shuffle(parts)
        for p in parts:
            cands = [n for n in self.by_part[t].get(p, []) if n != name]
            if cands:
                return rng.choice(cands)
        return self._name(t, rng, avoid=name)

    def _distractors(
        self, subject: str, stype: EntityType, rel: str | None, rng: random.Random, n: int
    ) -> list[str]:
        """`n` documents that look like the fact (subject, rel, ?) but are not it."""
        out: list[str] = []
        others = [r for r in RELATIONS_OF[stype] if r != rel]
        while len(out) < n:
            kind = rng.choices(
                ["same_subject", "lookalike", "lookalike_other", "as_object"], weights=[3, 4, 1, 2]
            )[0]
            if kind == "same_subject" and others:
                r = rng.choice(others)
                doc = fact_text(subject, r, self._name(self._type_of(r), rng, avoid=subject))
            elif kind in ("lookalike", "lookalike_other"):
                r = rel if (kind == "lookalike" and rel) else rng.choice(RELATIONS_OF[stype])
                la = self._lookalike(subject, stype, rng)
                doc = fact_text(la, r, self._name(self._type_of(r), rng, avoid=la))
            else:
                back = [r for r in BASE_RELATIONS.values() if r.range == stype]
                r = rng.choice(back)
                doc = fact_text(self._name(r.domain, rng, avoid=subject), r.name, subject)
            if doc not in out:
                out.append(doc)
        return out

    def sample(self, rng: random.Random) -> Episode:
        family = rng.choice(self.families)
        stype = RELATIONS[family[0]].domain
        start = self._name(stype, rng)
        chain, cur, ctype = [], start, stype
        for rel in family:
            obj = self._name(self._type_of(rel), rng, avoid=cur)
            chain.append((cur, rel, obj))
            cur, ctype = obj, self._type_of(rel)
        steps = [fact_text(*f) for f in chain]
        t = rng.randrange(len(family) + 1)  # which step to predict; the last is the answer
        k = rng.randint(*self.k_range)
        if t < len(family):
            subj, rel, _ = chain[t]
            gold = steps[t]
            docs = [gold] + self._distractors(subj, RELATIONS[rel].domain, rel, rng, k - 1)
            target = gold
        else:
            docs = self._distractors(cur, ctype, None, rng, k)
            target = answer_step(cur)
        rng.shuffle(docs)
        return Episode(question_text(family, start), docs, steps[:t], target, family)


def step_accuracy(engine, episodes: Sequence[Episode], grounded: bool = False) -> float:
    """Share of `episodes` whose greedy next step, written by `engine` (any `Engine`), equals
    the target exactly; `grounded` decodes inside the compact grammar."""
    prompts = [engine.render(e.question, e.docs, e.steps) for e in episodes]
    choices = (
        [grounded_choices(e.question, e.docs, e.steps) for e in episodes] if grounded else None
    )
    outs = engine.generate(prompts, choices=choices)
    return sum(o.text == e.target for o, e in zip(outs, episodes, strict=True)) / max(
        1, len(episodes)
    )
