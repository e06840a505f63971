"""The step format: how a prompt is laid out, and where steps, answers and citations are parsed.

Two templates share one parser:
- `compact`: the small model's own format, one line of word tokens
  `question: ... doc: ... doc: ... step: ... step:` (the model writes the next step, then EOS);
- `chat`: for instruct models (Qwen, Llama): a system prompt, the numbered documents, the steps
  so far and "write the next step or the answer", rendered with the tokenizer's chat template.
A `StepFormat` (template, tokenizer, system prompt) renders every prompt of one model: the
engines', and the training data of SFT and PPO, so a model learns the format it is asked in.
Everything that reads a step (the RGR loop, the verifier, the PRM, extraction) goes through
`parse_answer` and `cite`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ANSWER_PREFIX = "the answer is"
StepTemplate = Literal["compact", "chat"]

_ANSWER_RE = re.compile(r"^\s*(?:the answer is|answer\s*:)\s*(?P<a>.+?)\s*\.?\s*$", re.I)
_CITE_RE = re.compile(r"\[(\d{1,3})\]")

CHAT_SYSTEM = (
    "You answer multi-hop questions one step at a time from the numbered documents. "
    "Each reply is exactly one step: either one fact from a document, citing it like [2], "
    "or, when the facts so far are enough, 'Answer: <answer>'."
)


def answer_step(answer: str) -> str:
    return f"{ANSWER_PREFIX} {answer} ."


def parse_answer(step: str) -> str | None:
    """The answer a step gives, or None when the step is a reasoning step."""
    m = _ANSWER_RE.match(_CITE_RE.sub("", step))
    return m["a"].strip() if m else None


def clean_step(text: str) -> str:
    """First line of a generation, whitespace folded."""
    line = text.strip().split("\n", 1)[0]
    return " ".join(line.split())


def compact_prompt(question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
    parts = [f"question: {question}"]
    parts += [f"doc: {d}" for d in docs]
    parts += [f"step: {s}" for s in steps]
    parts.append("step:")
    return " ".join(parts)


def chat_messages(
    question: str, docs: Sequence[str], steps: Sequence[str], system: str = CHAT_SYSTEM
) -> list[dict]:
    listing = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs)) or "(none)"
    so_far = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) or "(none yet)"
    user = (
        f"Documents:\n{listing}\n\nQuestion: {question}\n\nSteps so far:\n{so_far}\n\n"
        "Write the next step or the answer."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class StepFormat:
    """How one model is prompted for its next step: `template`, the tokenizer (whose chat
    template renders `chat`) and the system prompt."""

    template: StepTemplate = "compact"
    tokenizer: Any = None
    system: str = CHAT_SYSTEM

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        if self.template == "chat":
            if self.tokenizer is None:
                raise ValueError("the chat template needs the model's tokenizer")
            return self.tokenizer.apply_chat_template(
                chat_messages(question, docs, steps, self.system),
                add_generation_prompt=True,
                tokenize=False,
            )
        return compact_prompt(question, docs, steps)

    @property
    def grounded_default(self) -> bool:
        """Grounded decoding suits the compact format's models; an instruct model writes its
        own sentences."""
        return self.template == "compact"


def step_format(cfg, tokenizer=None) -> StepFormat:
    """The step format of `cfg`'s model (`model.template`, `model.system_prompt`); the chat
    template needs the model's tokenizer, loaded from `model_path` unless given."""
    if cfg.model.template == "chat" and tokenizer is None:
        # transformers' tokenizers import torch: only a chat template needs one here
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(cfg.model_path))
    return StepFormat(cfg.model.template, tokenizer, cfg.model.system_prompt or CHAT_SYSTEM)


def grounded_choices(
    question: str,
    docs: Sequence[str],
    steps: Sequence[str],
    max_span: int = 4,
    answers: bool = True,
    avoid: Collection[str] = (),
) -> list[str]:
    """The steps the grammar allows next: restate one sentence of a context document (a
    one-sentence document, as the world's facts, is restated whole), or answer with a span (up
    to `max_span` words) of what the steps so far established. `answers=False` leaves the
    answers out (a step must come first), unless no document offers a sentence. `avoid`: steps
    not offered, restatements or answers, compared with whitespace folded (a document restated
    there stays in the context, and its other sentences are offered; where every sentence is
    avoided, answers are offered even with `answers=False`).

    Decoding inside this set removes garbled copies, the small model's commonest error; which
    document to follow, and when and what to answer, stay the model's decisions.
    """
    avoid = {clean_step(a) for a in avoid}
    out = [
        s
        for s in dict.fromkeys(s for d in docs for s in sentences(d))
        if clean_step(s) not in avoid
    ]
    if out and not answers:
        return out
    words = [w for s in (steps or [question]) for w in s.split()]
    spans = {
        " ".join(words[i : i + n])
        for n in range(1, max_span + 1)
        for i in range(len(words) - n + 1)
        if all(_WORDLIKE.search(w) for w in words[i : i + n])
    }
    out += [a for a in (answer_step(sp) for sp in sorted(spans)) if clean_step(a) not in avoid]
    return out


_WORDLIKE = re.compile(r"\w")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    """`text` split into sentences (after . ! ? followed by a capital, digit or quote)."""
    return [s for s in (x.strip() for x in _SENTENCE_END.split(text)) if s]


def _tokens(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def overlap_f1(a: str, b: str) -> float:
    """Token-overlap F1 of two texts (lower-cased words, with multiplicity)."""
    at, bt = _tokens(a), _tokens(b)
    common = sum((at & bt).values())
    if not common:
        return 0.0
    p, r = common / sum(at.values()), common / sum(bt.values())
    return 2 * p * r / (p + r)


def cite(step: str, docs: Sequence[str], min_overlap: float = 0.6) -> list[int]:
    """Indexes into `docs` of the documents a step cites.

    Explicit markers (`[2]`, 1-based) win. Otherwise a reasoning step cites the document(s) it
    restates: those with a sentence equal to it, else the best token-overlap F1 between step
    and document, when it reaches `min_overlap`. An answer step without markers cites nothing: it concludes from the steps
    before it, whose citations are its support.
    """
    marked = [int(m) - 1 for m in _CITE_RE.findall(step)]
    marked = sorted({i for i in marked if 0 <= i < len(docs)})
    if marked or parse_answer(step) is not None:
        return marked
    text = _CITE_RE.sub("", step)
    if not _tokens(text) or not docs:
        return []
    folded = " ".join(text.split())
    inside = [
        i for i, d in enumerate(docs) if folded in {" ".join(x.split()) for x in sentences(d)}
    ]
    if inside:  # a step that restates a sentence of a paragraph (or all of it) cites it
        return inside
    scores = [overlap_f1(text, d) for d in docs]
    best = max(scores)
    if best < min_overlap:
        return []
    return [i for i, s in enumerate(scores) if s == best]
