"""How the CLI prints what it did: trajectories and served replies, step by step."""

from __future__ import annotations

from cls_ray.rgr import Trajectory


def print_trajectory(tr: Trajectory) -> None:
    print(f"question: {tr.question}")
    for n, s in enumerate(tr.steps, 1):
        kind = "answer" if s.is_answer else f"step {n}"
        print(f"  {kind}: {s.text}")
        if s.query is not None:
            print(f"      query: {s.query}")
        texts = {d.id: d.text for d in s.retrieved}
        for c in s.cited:
            print(f"      cites {c}: {texts.get(c, '')}")
    print(f"answer: {tr.answer if tr.answer is not None else '(none within the step limit)'}")
    print(
        f"model version: {tr.model_version}; retrieval {tr.retrieval_s:.3f} s, "
        f"generation {tr.generation_s:.3f} s"
    )


def print_reply(question: str, res: dict) -> None:
    """A `/v1/rgr` reply of the served stack."""
    print(f"question: {question}")
    for n, st in enumerate(res["steps"], 1):
        print(f"  {'answer' if st['is_answer'] else f'step {n}'}: {st['text']}")
        for c in st["citations"]:
            print(f"      cites {c['id']}: {c['text']}")
    print(f"answer: {res['answer']}")
    print(f"model version: {res['model_version']}; session {res['session_id']} (served)")
