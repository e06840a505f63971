"""A deterministic, seeded multi-hop knowledge world.

Entities (people, organisations, cities) carry typed relations; every fact is one document.
Every entity that questions can start from has a *look-alike* shadow entity whose name shares a
part with it and which carries the same relations with other objects: its documents are the
distractors that make retrieval a real search. Questions compose 1 to 3 relations (a *family*);
their gold chains are the facts followed hop by hop. Core entities are split train / held-out:
held-out questions start from held-out entities, and the bootstrap training episodes use only
train-side names with facts re-drawn for every episode, so no held-out fact can be memorized.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cls_ray.steps import answer_step
from cls_ray.world.names import NAME_PARTS, EntityType


@dataclass(frozen=True)
class Relation:
    name: str
    noun: str  # questions and documents name it: "what is the <noun> of X ?"
    domain: EntityType
    range: EntityType


def _by_name(*relations: tuple[str, str, EntityType, EntityType]) -> dict[str, Relation]:
    return {name: Relation(name, *rest) for name, *rest in relations}


# Every world has these: (name, noun, domain, range).
BASE_RELATIONS = _by_name(
    ("employer", "employer", "person", "org"),
    ("mentor", "mentor", "person", "person"),
    ("birthplace", "birthplace", "person", "city"),
    ("rival", "rival", "person", "person"),
    ("founder", "founder", "org", "person"),
    ("hq", "headquarters", "org", "city"),
    ("mayor", "mayor", "city", "person"),
)
# Skills a world gains only when `world.held_back_sequence` names them: their facts (drawn after
# the base facts, from a seed of their own, so the base world stays as it is) and families.
STREAM_RELATIONS = _by_name(
    ("spouse", "spouse", "person", "person"),
    ("school", "school", "person", "org"),
    ("partner", "partner", "org", "org"),
    ("twin", "twin city", "city", "city"),
)
RELATIONS: dict[str, Relation] = {**BASE_RELATIONS, **STREAM_RELATIONS}  # by name, for lookups
RELATIONS_OF: dict[str, list[str]] = {
    t: [r.name for r in BASE_RELATIONS.values() if r.domain == t] for t in ("person", "org", "city")
}

# Skill families: relation compositions, first hop first.
FAMILIES: list[tuple[str, ...]] = [
    ("employer",),
    ("mentor",),
    ("birthplace",),
    ("founder",),
    ("hq",),
    ("mayor",),
    ("rival",),
    ("employer", "founder"),
    ("employer", "hq"),
    ("mentor", "employer"),
    ("mentor", "birthplace"),
    ("birthplace", "mayor"),
    ("founder", "birthplace"),
    ("rival", "employer"),
    ("mentor", "rival"),
    ("employer", "founder", "birthplace"),
    ("mentor", "employer", "hq"),
    ("birthplace", "mayor", "employer"),
    ("founder", "mentor", "birthplace"),
    ("rival", "employer", "founder"),
    ("mentor", "rival", "birthplace"),
]

# Each stream relation alone and composed with base relations, 1 to 3 hops.
STREAM_FAMILIES: dict[str, list[tuple[str, ...]]] = {
    "spouse": [
        ("spouse",),
        ("spouse", "employer"),
        ("mentor", "spouse"),
        ("spouse", "employer", "hq"),
    ],
    "school": [
        ("school",),
        ("school", "founder"),
        ("mentor", "school"),
        ("school", "hq", "mayor"),
    ],
    "partner": [
        ("partner",),
        ("employer", "partner"),
        ("partner", "founder"),
        ("employer", "partner", "hq"),
    ],
    "twin": [
        ("twin",),
        ("birthplace", "twin"),
        ("twin", "mayor"),
        ("birthplace", "twin", "mayor"),
    ],
}


def family_name(family: tuple[str, ...]) -> str:
    return ".".join(family)


class WorldConfig(BaseModel):
    """Size and split of the built-in world. `scale` 1.0 gives > 10,000 documents."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed of the world: same seed, same world.")
    scale: float = Field(
        1.0, gt=0, le=1.2, description="Size knob: 1.0 is the default world, 0.02 a tiny one."
    )
    heldout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of core entities whose questions are held out."
    )
    held_back_relations: list[str] = Field(
        default_factory=lambda: ["rival"],
        description="Families that use any of these relations are kept out of bootstrap "
        "training: later consolidation has to teach them.",
    )
    held_back_sequence: list[str] = Field(
        default_factory=list,
        description="A stream of skills, one relation each, in the order sleeps are to learn "
        f"them: base relations or the stream's own ({', '.join(STREAM_RELATIONS)}, which "
        "exist only when named here). None is seen by the bootstrap.",
    )

    @field_validator("held_back_sequence")
    @classmethod
    def _known_relations(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in RELATIONS]
        if unknown:
            raise ValueError(f"unknown relation(s) {unknown}: choose from {sorted(RELATIONS)}")
        if len(set(v)) != len(v):
            raise ValueError("a relation appears twice in the sequence")
        return v


def fact_text(subject: str, relation: str, obj: str) -> str:
    """The one sentence form of a fact: `the employer of Alice Porter is Falcon Labs .`"""
    return f"the {RELATIONS[relation].noun} of {subject} is {obj} ."


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str

    @property
    def text(self) -> str:
        return fact_text(self.subject, self.relation, self.object)

    @property
    def doc_id(self) -> str:
        return "w-" + hashlib.sha1(self.text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    fact: Fact | None = None
    distractor: bool = False  # about a look-alike entity no question starts from


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    family: tuple[str, ...]
    start: str
    chain: tuple[Fact, ...]
    split: Literal["train", "heldout"]
    held_back: bool

    @property
    def hops(self) -> int:
        return len(self.family)

    @property
    def answer(self) -> str:
        return self.chain[-1].object

    @property
    def gold_steps(self) -> list[str]:
        return [f.text for f in self.chain] + [answer_step(self.answer)]

    @property
    def support_ids(self) -> list[str]:
        return [f.doc_id for f in self.chain]


def question_text(family: tuple[str, ...], start: str) -> str:
    nouns = " of the ".join(RELATIONS[r].noun for r in reversed(family))
    return f"what is the {nouns} of {start} ?"


@dataclass
class World:
    config: WorldConfig
    entities: dict[str, EntityType]  # name -> type, core and shadow
    core: dict[EntityType, list[str]]
    split_of: dict[str, Literal["train", "heldout"]]  # core entities only
    facts: dict[tuple[str, str], Fact]  # (subject, relation) -> fact
    shadows: set[str] = field(default_factory=set)

    @cached_property
    def documents(self) -> list[Document]:
        return [
            Document(f.doc_id, f.text, f, distractor=f.subject in self.shadows)
            for f in self.facts.values()
        ]

    @cached_property
    def doc_by_id(self) -> dict[str, Document]:
        return {d.id: d for d in self.documents}

    @property
    def families(self) -> list[tuple[str, ...]]:
        """The base families, then those of the stream relations in the sequence."""
        seq = self.config.held_back_sequence
        return FAMILIES + [f for r in seq if r in STREAM_FAMILIES for f in STREAM_FAMILIES[r]]

    @property
    def relations(self) -> dict[str, Relation]:
        """The relations this world has facts of."""
        seq = self.config.held_back_sequence
        return {**BASE_RELATIONS, **{r: STREAM_RELATIONS[r] for r in seq if r in STREAM_RELATIONS}}

    def is_held_back(self, family: tuple[str, ...]) -> bool:
        held = {*self.config.held_back_relations, *self.config.held_back_sequence}
        return any(r in held for r in family)

    @property
    def trained_families(self) -> list[tuple[str, ...]]:
        return [f for f in self.families if not self.is_held_back(f)]

    @property
    def held_back_families(self) -> list[tuple[str, ...]]:
        return [f for f in self.families if self.is_held_back(f)]

    def skill_families(self) -> list[tuple[str, list[tuple[str, ...]]]]:
        """The stream of skills, in order: each relation of `held_back_sequence` with the
        held-back families whose latest relation in the sequence it is (a family that composes
        two of them is the later one's: it needs both)."""
        seq = self.config.held_back_sequence
        out: list[tuple[str, list[tuple[str, ...]]]] = [(r, []) for r in seq]
        for f in self.held_back_families:
            ranks = [seq.index(r) for r in f if r in seq]
            if ranks:
                out[max(ranks)][1].append(f)
        return out

    def follow(self, start: str, family: tuple[str, ...]) -> tuple[Fact, ...] | None:
        chain, cur = [], start
        for rel in family:
            fact = self.facts.get((cur, rel))
            if fact is None:
                return None
            chain.append(fact)
            cur = fact.object
        return tuple(chain)

    def questions(
        self,
        split: Literal["train", "heldout"],
        families: list[tuple[str, ...]] | None = None,
        per_family: int = 20,
        seed: int = 0,
    ) -> list[Question]:
        """Deterministic questions of `split`, `per_family` for each family (fewer if the world
        is too small)."""
        rng = random.Random(f"{self.config.seed}-{split}-{seed}")
        out: list[Question] = []
        for fam in families if families is not None else self.families:
            starts = [e for e in self.core[RELATIONS[fam[0]].domain] if self.split_of[e] == split]
            rng.shuffle(starts)
            for start in starts[:per_family]:
                chain = self.follow(start, fam)
                if chain is None:
                    continue
                qid = hashlib.sha1(f"{family_name(fam)}|{start}".encode()).hexdigest()[:12]
                out.append(
                    Question(
                        id=f"q-{qid}",
                        text=question_text(fam, start),
                        family=fam,
                        start=start,
                        chain=chain,
                        split=split,
                        held_back=self.is_held_back(fam),
                    )
                )
        return out

    def train_names(self) -> dict[EntityType, list[str]]:
        """Names allowed in bootstrap training episodes: no held-out core entity, ever."""
        held = {e for e, s in self.split_of.items() if s == "heldout"}
        out: dict[EntityType, list[str]] = {"person": [], "org": [], "city": []}
        for name, t in self.entities.items():
            if name not in held:
                out[t].append(name)
        return out


def _lookalike(
    name: str, etype: EntityType, free: dict[EntityType, set[tuple[str, str]]], rng: random.Random
) -> str:
    a, b = name.split(" ")
    pool = free[etype]
    if etype == "person":
        cands = [c for c in pool if c[0] == a or c[1] == b]
    else:
        cands = [c for c in pool if c[0] == a]
    if not cands:
        cands = list(pool)
    pick = min(cands) if len(cands) == 1 else rng.choice(sorted(cands))
    pool.discard(pick)
    return " ".join(pick)


def build_world(config: WorldConfig | None = None) -> World:
    """Builds the world of `config` deterministically."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    counts: dict[EntityType, int] = {
        "person": max(8, round(1200 * config.scale)),
        "org": max(3, round(160 * config.scale)),
        "city": max(2, round(50 * config.scale)),
    }
    free: dict[EntityType, set[tuple[str, str]]] = {}
    core: dict[EntityType, list[str]] = {}
    for t in ("person", "org", "city"):
        combos = NAME_PARTS.combos(t)
        rng.shuffle(combos)
        core[t] = [" ".join(c) for c in combos[: counts[t]]]
        free[t] = set(combos[counts[t] :])

    entities: dict[str, EntityType] = {n: t for t, names in core.items() for n in names}
    split_of: dict[str, Literal["train", "heldout"]] = {}
    for names in core.values():
        n_held = max(1, round(len(names) * config.heldout_fraction))
        for i, name in enumerate(names):
            split_of[name] = "heldout" if i < n_held else "train"

    facts: dict[tuple[str, str], Fact] = {}

    def add_facts(subject: str, etype: EntityType) -> None:
        for rel in RELATIONS_OF[etype]:
            choices = [o for o in core[RELATIONS[rel].range] if o != subject]
            facts[(subject, rel)] = Fact(subject, rel, rng.choice(choices))

    for t in ("person", "org", "city"):
        for name in core[t]:
            add_facts(name, t)
    shadows: set[str] = set()
    for t in ("person", "org", "city"):
        for name in core[t]:
            shadow = _lookalike(name, t, free, rng)
            entities[shadow] = t
            shadows.add(shadow)
            add_facts(shadow, t)
    # The stream's relations, for core entities and their look-alikes, from a seed of their own.
    stream = [STREAM_RELATIONS[r] for r in config.held_back_sequence if r in STREAM_RELATIONS]
    srng = random.Random(f"{config.seed}-stream")
    for rel in stream:
        for subject, t in list(entities.items()):
            if t == rel.domain:
                choices = [o for o in core[rel.range] if o != subject]
                facts[(subject, rel.name)] = Fact(subject, rel.name, srng.choice(choices))
    return World(config, entities, core, split_of, facts, shadows)
