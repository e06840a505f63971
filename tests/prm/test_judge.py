"""Step labels from an OpenAI-compatible judge: what its replies mean, and that a judge that
never answers costs a bounded wait and labels nothing."""

import socket
import time

import pytest

from cls_ray.config import load_config
from cls_ray.prm.judge import judge_client, judge_labels, judge_prompt, parse_verdicts
from cls_ray.prm.labels import StepExample


def example(n=3) -> StepExample:
    steps = [
        "the mentor of Ann Lee is Bo Chen .",
        "the employer of Bo Chen is Acme .",
        "the answer is Acme .",
    ]
    return StepExample(
        "who employs the mentor of Ann Lee ?",
        steps[:n],
        [None] * n,
        ["doc a", "doc a"][:n] + [""] * (n - 2),
        "gold",
    )


def test_the_judges_reply_becomes_labels_and_what_it_does_not_mark_stays_unlabelled():
    reply = "1: correct\nStep 2 - wrong\n3: **correct** (the answer follows)\n7: wrong"
    assert parse_verdicts(reply, 3) == [1.0, 0.0, 1.0]
    assert parse_verdicts("1: correct\n3: wrong", 3) == [1.0, None, 0.0]
    assert parse_verdicts("1: correct\n1: wrong", 1) == [None]  # contradicts itself
    assert parse_verdicts("I cannot tell.", 2) == [None, None]
    prompt = judge_prompt(example(), ["Acme"])
    assert "Reference answer(s): Acme" in prompt and "3. the answer is Acme ." in prompt
    assert prompt.count("doc a") == 1  # each document once


def test_a_judge_needs_an_endpoint_and_its_key(monkeypatch):
    with pytest.raises(ValueError, match="prm.judge.url"):
        judge_client(load_config(None, []))
    cfg = load_config(
        None,
        [
            "prm.judge.url=http://127.0.0.1:9/v1",
            "prm.judge.model=m",
            "prm.judge.api_key_env=CLS_RAY_TEST_JUDGE",
        ],
    )
    monkeypatch.delenv("CLS_RAY_TEST_JUDGE", raising=False)
    with pytest.raises(ValueError, match="CLS_RAY_TEST_JUDGE"):
        judge_client(cfg)
    monkeypatch.setenv("CLS_RAY_TEST_JUDGE", "k")
    assert judge_client(cfg).api_key == "k"


def test_a_judge_that_never_answers_costs_a_bounded_wait():
    """A listener on loopback that accepts and never replies: every request times out, the
    steps stay unlabelled, and the wait is bounded by the timeout, not by the judge."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        cfg = load_config(
            None,
            [
                f"prm.judge.url=http://127.0.0.1:{port}/v1",
                "prm.judge.model=m",
                "prm.judge.api_key_env=",
                "prm.judge.timeout_s=1",
                "prm.judge.retries=0",
            ],
        )
        exs = [example(), example(2), example(1)]
        t0 = time.monotonic()
        out, stats = judge_labels(exs, [["Acme"]] * 3, judge_client(cfg), "m", max_requests=2)
        took = time.monotonic() - t0
    assert took < 10
    assert (stats.requests, stats.failed, stats.skipped, stats.labelled_steps) == (2, 2, 1, 0)
    assert [e.labels for e in out] == [[None] * 3, [None] * 2, [None]]
    assert {e.source for e in out} == {"judge"}
