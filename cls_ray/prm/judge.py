"""Step labels from a judge: any OpenAI-compatible chat endpoint (a hosted model, vLLM's
`vllm serve`, or cls-ray's own ingress) reads a trajectory with its question, the reference
answers and the documents each step had, and marks every step correct or wrong.

The endpoint, model and the environment variable holding its key come from `prm.judge`; the key
itself never sits in a config. Every request has a timeout and the number of requests a bound;
a step the judge does not mark in a form it can read stays unlabelled (None): the judge
abstains rather than guesses. Labels from a judge join the other sources in `merge_labels`
(with `prm.consensus`, only where they agree).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from openai import OpenAI

from cls_ray.prm.labels import Label, StepExample

logger = logging.getLogger(__name__)

SYSTEM = (
    "You check reasoning steps. A step is correct when it is true by the documents and takes "
    "the reasoning toward the reference answer; it is wrong when it is false, unsupported, "
    "about the wrong thing, or when it gives a wrong answer."
)
_LINE = re.compile(
    r"^\s*(?:step\s*)?(\d+)\s*[:.)\-]\s*\**\s*(correct|right|wrong|incorrect)\b", re.I
)


@dataclass
class JudgeStats:
    requests: int = 0
    failed: int = 0  # errors and timeouts
    skipped: int = 0  # over the request bound
    labelled_steps: int = 0


def judge_prompt(ex: StepExample, answers: Sequence[str]) -> str:
    docs = list(dict.fromkeys(e for e in ex.evidence if e))
    lines = [f"Question: {ex.prompt}", f"Reference answer(s): {' | '.join(answers)}", "Documents:"]
    lines += [f"[{i}] {d}" for i, d in enumerate(docs, 1)] or ["(none)"]
    lines.append("Steps:")
    lines += [f"{i}. {s}" for i, s in enumerate(ex.completions, 1)]
    lines.append(
        "Mark every step. Reply with one line per step, exactly `<number>: correct` or "
        "`<number>: wrong`, and nothing else."
    )
    return "\n".join(lines)


def parse_verdicts(reply: str, n: int) -> list[Label]:
    """A label per step from the judge's reply (1.0 correct, 0.0 wrong); None for a step the
    reply does not mark, or marks twice differently."""
    got: dict[int, set[float]] = {}
    for line in (reply or "").splitlines():
        m = _LINE.match(line)
        if m and 1 <= int(m.group(1)) <= n:
            ok = m.group(2).lower() in ("correct", "right")
            got.setdefault(int(m.group(1)), set()).add(1.0 if ok else 0.0)
    return [next(iter(got[i])) if len(got.get(i, ())) == 1 else None for i in range(1, n + 1)]


def judge_client(cfg, http_client=None) -> OpenAI:
    """The client for `prm.judge`; the key is read from the variable it names (none needed
    when it names none, as for a local `vllm serve`)."""
    j = cfg.prm.judge
    if not j.url or not j.model:
        raise ValueError("prm.label_sources names judge: set prm.judge.url and prm.judge.model")
    key = "none"
    if j.api_key_env:
        key = os.environ.get(j.api_key_env, "")
        if not key:
            raise ValueError(
                f"prm.judge.api_key_env names {j.api_key_env}, which is not set in the environment"
            )
    return OpenAI(
        base_url=j.url, api_key=key, timeout=j.timeout_s, max_retries=j.retries,
        http_client=http_client,
    )  # fmt: skip


def judge_labels(
    examples: Sequence[StepExample],
    answers: Sequence[Sequence[str]],
    client: OpenAI,
    model: str,
    max_requests: int = 1000,
    concurrency: int = 4,
) -> tuple[list[StepExample], JudgeStats]:
    """Each example judged by one request (at most `max_requests`, `concurrency` at a time):
    the examples with the judge's labels (source `judge`) and what happened."""
    stats = JudgeStats()

    def ask(i: int) -> list[Label]:
        ex = examples[i]
        if i >= max_requests:
            stats.skipped += 1
            return [None] * len(ex.completions)
        stats.requests += 1
        try:
            r = client.chat.completions.create(
                model=model,
                temperature=0.0,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": judge_prompt(ex, answers[i])},
                ],
            )
            return parse_verdicts(r.choices[0].message.content or "", len(ex.completions))
        except Exception as e:  # an endpoint that fails or times out labels nothing
            stats.failed += 1
            logger.warning("judge: request %d failed: %s", i, e)
            return [None] * len(ex.completions)

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        labels = list(pool.map(ask, range(len(examples))))
    out = []
    for ex, lab in zip(examples, labels, strict=True):
        stats.labelled_steps += sum(x is not None for x in lab)
        out.append(
            StepExample(ex.prompt, list(ex.completions), lab, list(ex.evidence), "judge", ex.meta)
        )
    return out, stats
