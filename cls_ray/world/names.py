"""The world's fixed name inventory: people, organisations and cities are two-part names
built from ordinary words (each a single word piece for common sentence encoders, so a dense
retriever can tell names apart); look-alikes share one part of a name. Independent of the
world's seed, so the vocabulary is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EntityType = Literal["person", "org", "city"]

_ORG_KINDS = ["Labs", "Works", "Group", "Systems", "Partners", "Guild"]
_CITY_SUFFIXES = ["City", "Falls", "Harbor", "Ridge", "Valley", "Springs"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.capitalize() for w in text.split())


# Name parts are ordinary words that are single word pieces for common sentence encoders, so a
# dense retriever can tell names apart; look-alikes share one part of a name.
_FIRST = _words(
    "alice bruno carla dmitri elena felix greta hugo irene jonas leon maria nadia oscar paula "
    "quinn rosa stefan tara ulrich vera walter yusuf anton bianca carlos dora emil fiona gustav "
    "hanna igor julia kevin lena marco nina otto petra rafael sonia tobias ursula victor wanda "
    "amir beatrice cyrus edgar flora gideon helena ivan agnes boris clara dario ella frank gloria "
    "henry ingrid james laura martin nora peter ruth simon theo"
)
_LAST = _words(
    "porter fischer novak larsen tanaka silva kowalski brennan haas jensen keller mendez "
    "nakamura oliveira rossi schmidt torres urban weber abbott bishop carver dalton ellison "
    "foster garner hale ingram jarvis kemp lowell marsh norris orton ramsey sutton thorne vance "
    "wilder yates ashby bell crane doyle eaton frost grant holt baker cooper dixon fleming "
    "gibson harper hughes jordan knight lambert mason nash osborne parker reed"
)
_ORG_ROOT = _words(
    "falcon granite helix indigo juniper keystone meridian pinnacle quartz radiant sterling "
    "titan vector willow zenith apex beacon cedar drift echo fjord glacier ionic jade kinetic "
    "lattice mosaic nova orbit prism quest summit unity vertex wave blaze cipher dune flux grove "
    "halo iris cobalt delta atlas bolt crest forge horizon lotus magnet noble oak pulse rocket "
    "spark"
)
_CITY_ROOT = _words(
    "boston denver austin dallas berlin madrid lisbon vienna prague dublin oslo geneva milan "
    "naples seville porto lyon munich hamburg zurich bristol leeds glasgow cardiff belfast "
    "toronto ottawa quebec calgary sydney perth auckland cairo nairobi lagos delhi mumbai osaka "
    "kyoto seoul"
)


@dataclass(frozen=True)
class NameParts:
    """The fixed name inventory. It is independent of the world seed so the vocabulary is fixed."""

    first: tuple[str, ...]
    last: tuple[str, ...]
    org_root: tuple[str, ...]
    city_root: tuple[str, ...]
    org_kind: tuple[str, ...] = tuple(_ORG_KINDS)
    city_suffix: tuple[str, ...] = tuple(_CITY_SUFFIXES)

    @staticmethod
    def build() -> NameParts:
        parts = [_FIRST, _LAST, _ORG_ROOT, _CITY_ROOT, tuple(_ORG_KINDS), tuple(_CITY_SUFFIXES)]
        words = [w for p in parts for w in p]
        assert len(words) == len(set(words)), "name parts must not repeat across lists"
        return NameParts(_FIRST, _LAST, _ORG_ROOT, _CITY_ROOT)

    def all_words(self) -> list[str]:
        return [
            *self.first,
            *self.last,
            *self.org_root,
            *self.city_root,
            *self.org_kind,
            *self.city_suffix,
        ]

    def combos(self, etype: EntityType) -> list[tuple[str, str]]:
        a, b = {
            "person": (self.first, self.last),
            "org": (self.org_root, self.org_kind),
            "city": (self.city_root, self.city_suffix),
        }[etype]
        return [(x, y) for x in a for y in b]


NAME_PARTS = NameParts.build()
