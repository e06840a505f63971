"""The pure RGR loop's `Engine` and `Memory` over deployment handles, for code that runs in a
worker thread of a replica or in a job next to the application. A call larger than a
deployment batches at once is split into groups sent together."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ray import serve

from cls_ray.engine.base import Generation
from cls_ray.memory.documents import RetrievedDoc
from cls_ray.memory.procedures import Pattern, parse_pattern
from cls_ray.serving.batching import slices
from cls_ray.serving.limits import result_within
from cls_ray.serving.names import RETRIEVER
from cls_ray.steps import StepFormat


def in_groups(
    method,
    n: int,
    max_group: int | None,
    body: Callable[[slice], dict],
    timeout_s: float | None = None,
    what: str = "a deployment",
) -> list:
    """Calls a deployment `method` once per group of at most `max_group` of the `n` items
    (`body(slice)` builds a group's request; all groups are in flight together) and returns the
    results in order, each within `timeout_s` (`limits.Unavailable` naming `what` beyond)."""
    calls = [method.remote(body(s)) for s in slices(n, max_group)]
    return [x for call in calls for x in result_within(call, timeout_s, what)]


class RemoteEngine:
    """`Engine` over the generator deployment, pinned to the version the session started on."""

    def __init__(
        self,
        handle,
        version: str,
        fmt: StepFormat,
        max_group: int | None = None,
        timeout_s: float | None = None,
    ):
        self.handle = handle
        self.version = version
        self.format = fmt
        self.max_group = max_group
        self.timeout_s = timeout_s

    def render(self, question, docs, steps) -> str:
        # Rendering is string formatting (or the tokenizer's chat template): done here, it
        # saves the generator a round trip per step.
        return self.format.render(question, docs, steps)

    def generate(self, prompts, temperature=0.0, max_new_tokens=None, seed=None, choices=None):
        """One request for all prompts of a round (the sessions of one ingress batch)."""
        prompts = list(prompts)
        got = in_groups(
            self.handle.generate,
            len(prompts),
            self.max_group,
            lambda g: {
                "prompts": prompts[g],
                "temperature": temperature,
                "version": self.version,
                "choices": None if choices is None else [list(c) for c in choices[g]],
            },
            self.timeout_s,
            "the generator",
        )
        if got:
            self.version = got[0]["version"]
        return [Generation(g["text"], g["token_ids"], g["logprobs"]) for g in got]


class RemoteRetriever:
    """`Memory` over the retriever deployment: retrieval, procedures and document texts."""

    def __init__(self, handle, max_group: int | None = None, timeout_s: float | None = None):
        self.handle = handle
        self.max_group = max_group
        self.timeout_s = timeout_s

    @classmethod
    def of_app(
        cls, app_name: str, max_group: int | None = None, timeout_s: float | None = None
    ) -> RemoteRetriever:
        """The retriever of a running application, from anywhere in its cluster."""
        return cls(serve.get_deployment_handle(RETRIEVER, app_name), max_group, timeout_s)

    def _result(self, call):
        return result_within(call, self.timeout_s, "the retriever")

    def retrieve(self, queries, k, exclude=None) -> list[list[RetrievedDoc]]:
        queries = list(queries)
        got = in_groups(
            self.handle.retrieve,
            len(queries),
            self.max_group,
            lambda g: {
                "queries": queries[g],
                "k": k,
                "exclude": [sorted(e) for e in exclude[g]] if exclude else None,
            },
            self.timeout_s,
            "the retriever",
        )
        return [[RetrievedDoc(d["id"], d["score"], d["text"]) for d in docs] for docs in got]

    def plans(self, questions: Sequence[str]) -> list[Pattern | None]:
        got = self._result(self.handle.plans.remote(list(questions)))
        return [None if p is None else parse_pattern(p["text"]) for p in got]

    def add_patterns(self, patterns: Sequence[Pattern]) -> int:
        rows = [
            {"question": p.question, "steps": list(p.steps), "support": p.support, "r_tau": p.r_tau}
            for p in patterns
        ]
        return self._result(self.handle.add_patterns.remote(rows))

    def get_documents(self, ids: Sequence[str]) -> dict[str, str]:
        return self._result(self.handle.get_documents.remote(list(ids)))
