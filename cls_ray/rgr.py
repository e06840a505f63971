"""Reasoning-Guided Retrieval: retrieve after every reasoning step, then write the next one.

Step 0 retrieves with the question. After step s_t the loop builds one query from the question
and the steps so far (`step_query`), takes the top-k documents, puts them in the model's context
and generates the next step; it stops at an answer or at the step limit. Every step records its
query, what it retrieved (ids, scores) and which documents it cites.

The loop is pure: the engine and the retriever are passed in, so the same code runs on the
HF engine on a laptop, on vLLM, and inside a Serve replica, and it runs the two baselines:
`single` (retrieve once from the question, keep those documents) and `none` (no retrieval).
Many questions advance in lock-step so each round is one retrieval call and one generate call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from cls_ray.memory.procedures import hint_query
from cls_ray.ports import Engine, Memory, RetrievedDoc, Retriever
from cls_ray.steps import cite, grounded_choices, parse_answer

__all__ = ["RGRMode", "RetrievedDoc", "StepRecord", "Trajectory", "run_rgr", "step_query"]

RGRMode = Literal["rgr", "single", "none"]

_WORD = re.compile(r"\w+")


def _norm(word: str) -> str:
    return "".join(_WORD.findall(word.lower()))


def step_query(question: str, steps: Sequence[str]) -> str:
    """The text RGR embeds before the next step.

    With no steps it is the question. After a step it is the *reasoning state*: the words the
    last step newly established (those in neither the question nor earlier steps; the bridge
    entity), followed by the part of the question the steps have not covered yet. On a
    multi-hop question this moves the query from what is already resolved to what is still
    asked ("Falcon Labs what founder ?" after "the employer of Alice Porter is Falcon Labs").
    """
    if not steps:
        return question
    covered: set[str] = set()
    for s in steps:
        covered |= {_norm(w) for w in s.split()}
    prior = {_norm(w) for w in question.split()}
    for s in steps[:-1]:
        prior |= {_norm(w) for w in s.split()}
    new = [w for w in steps[-1].split() if _norm(w) and _norm(w) not in prior]
    rest = [w for w in question.split() if _norm(w) not in covered]
    return " ".join(new + rest) or question


@dataclass
class StepRecord:
    text: str
    query: str | None
    retrieved: list[RetrievedDoc]
    cited: list[str]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    is_answer: bool = False


@dataclass
class Trajectory:
    question: str
    mode: RGRMode
    steps: list[StepRecord] = field(default_factory=list)
    answer: str | None = None
    retrieval_s: float = 0.0
    generation_s: float = 0.0
    latency_s: float = 0.0
    model_version: str = ""

    @property
    def step_texts(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def retrieved_ids(self) -> set[str]:
        return {d.id for s in self.steps for d in s.retrieved}

    def to_dict(self) -> dict:
        return asdict(self)


def run_rgr(
    questions: Sequence[str],
    engine: Engine,
    retriever: Retriever | None,
    mode: RGRMode = "rgr",
    top_k: int = 4,
    max_steps: int = 5,
    exclude_cited: bool = True,
    temperature: float = 0.0,
    seed: int | None = None,
    grounded: bool = False,
    prefixes: Sequence[Sequence[str | StepRecord]] | None = None,
    patterns: bool = False,
    max_tokens: int | None = None,
    min_steps: int | Sequence[int] = 0,
    avoid: Sequence[Collection[str]] | None = None,
) -> list[Trajectory]:
    """Runs RGR (or a baseline) for all `questions` together; returns one trajectory each.

    `grounded` decodes each step inside `grounded_choices` (restate a context document or
    answer from the steps so far), the same for every mode. `prefixes[i]`, when given, are steps
    question i starts from (a rollout from a partial trajectory; a `StepRecord` keeps what
    its step retrieved and cited, a text keeps nothing); `max_steps` counts them.
    `patterns` (rgr mode, a retriever that is a `Memory`) looks up an episodic procedure per question
    once and, while the steps follow it, retrieves with its next step (`hint_query`).
    `max_tokens` bounds the tokens a trajectory generates: it stops after the step that reaches
    it (without an answer, unless that step gave one). `min_steps` (one for all, or one per
    question; grounded decoding only) is the fewest steps before an answer: below it the
    grammar offers no answer. `avoid[i]` (grounded decoding only): steps the grammar does not
    offer question i at its first step after the prefix, though their documents stay in the
    context (the step a judge found wrong there, so the model takes its next choice).
    """
    if mode not in ("rgr", "single", "none"):
        raise ValueError(f"unknown mode {mode!r}; expected rgr, single or none")
    floors = [min_steps] * len(questions) if isinstance(min_steps, int) else list(min_steps)
    if len(floors) != len(questions):
        raise ValueError("min_steps: one number, or one per question")
    if any(floors) and not grounded:
        raise ValueError("min_steps needs grounded decoding (it withholds the answer choices)")
    if avoid is not None and (len(avoid) != len(questions) or not grounded):
        raise ValueError("avoid: one set of steps per question, under grounded decoding")
    if any(f >= max_steps for f in floors):
        raise ValueError(f"min_steps must stay below max_steps ({max_steps}): room to answer")
    if mode != "none" and retriever is None:
        raise ValueError(f"mode {mode!r} needs a retriever")
    version = engine.version
    trajs = [Trajectory(q, mode, model_version=version) for q in questions]
    context: list[list[RetrievedDoc]] = [[] for _ in questions]
    start = time.perf_counter()
    active = list(range(len(questions)))
    first = [len(p) for p in prefixes] if prefixes is not None else [0] * len(questions)
    plans: list = [None] * len(questions)
    if patterns and mode == "rgr" and isinstance(retriever, Memory):
        plans = retriever.plans(list(questions))
    if prefixes is not None:
        if len(prefixes) != len(questions):
            raise ValueError("prefixes: one list of steps per question")
        for tr, prefix in zip(trajs, prefixes, strict=True):
            for step in prefix:
                if not isinstance(step, StepRecord):
                    answer = parse_answer(step)
                    step = StepRecord(step, None, [], [], is_answer=answer is not None)
                answer = parse_answer(step.text)
                tr.steps.append(step)
                if answer is not None:
                    tr.answer = answer
                    break
        active = [i for i in active if trajs[i].answer is None and len(trajs[i].steps) < max_steps]
    for t in range(max_steps):
        if not active:
            break
        # Retrieve: every step in rgr mode, only before the first step in single mode.
        if mode == "rgr" or (mode == "single" and t == 0):
            queries = [
                (plans[i] and hint_query(plans[i], trajs[i].question, trajs[i].step_texts))
                or step_query(trajs[i].question, trajs[i].step_texts)
                for i in active
            ]
            exclude = (
                [{c for s in trajs[i].steps for c in s.cited} for i in active]
                if exclude_cited and mode == "rgr"
                else None
            )
            t0 = time.perf_counter()
            got = retriever.retrieve(queries, top_k, exclude)
            dt = (time.perf_counter() - t0) / len(active)
            for i, docs in zip(active, got, strict=True):
                context[i] = docs
                trajs[i].retrieval_s += dt
            step_queries = dict(zip(active, queries, strict=True))
        else:
            step_queries = {i: None for i in active}
        prompts = [
            engine.render(trajs[i].question, [d.text for d in context[i]], trajs[i].step_texts)
            for i in active
        ]
        choices = (
            [
                grounded_choices(
                    trajs[i].question,
                    [d.text for d in context[i]],
                    trajs[i].step_texts,
                    answers=len(trajs[i].steps) >= floors[i],
                    avoid=avoid[i] if avoid is not None and len(trajs[i].steps) == first[i] else (),
                )
                for i in active
            ]
            if grounded
            else None
        )
        t0 = time.perf_counter()
        gens = engine.generate(
            prompts,
            temperature=temperature,
            seed=None if seed is None else seed + t,
            choices=choices,
        )
        dt = (time.perf_counter() - t0) / len(active)
        still = []
        for i, g in zip(active, gens, strict=True):
            tr = trajs[i]
            tr.generation_s += dt
            docs = context[i]
            cited = [docs[j].id for j in cite(g.text, [d.text for d in docs])]
            answer = parse_answer(g.text)
            tr.steps.append(
                StepRecord(
                    text=g.text,
                    query=step_queries[i],
                    retrieved=list(docs),
                    cited=cited,
                    token_ids=g.token_ids,
                    logprobs=g.logprobs,
                    is_answer=answer is not None,
                )
            )
            spent = sum(len(x.token_ids or ()) for x in tr.steps)
            if answer is not None or not g.text:
                tr.answer = answer
                tr.latency_s = time.perf_counter() - start
            elif len(tr.steps) < max_steps and (max_tokens is None or spent < max_tokens):
                still.append(i)
            else:
                tr.latency_s = time.perf_counter() - start
        active = still
    for i in active:
        trajs[i].latency_s = time.perf_counter() - start
    return trajs
