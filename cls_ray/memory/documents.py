"""Documents as retrieval hands them out: `RetrievedDoc`, and the id a document gets from its
text when it brings none (so ingesting the same text twice adds nothing)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass
class RetrievedDoc:
    id: str
    score: float
    text: str


def doc_id_for(text: str) -> str:
    return "d-" + hashlib.sha1(text.encode()).hexdigest()[:16]
