"""Dreams ask again only what no trusted trajectory has solved."""

from cls_ray.consolidate.dream import dream_questions


def _s(question, r_tau):
    return {"question": question, "r_tau": r_tau}


def test_a_dream_asks_the_unsolved_questions_once_each_in_order():
    sessions = [
        _s("q1", 0.2),
        _s("q2", 0.9),  # solved: the PRM trusts this trajectory
        _s("q3", None),  # unscored: not solved
        _s("q1", 0.4),
        _s("q2", 0.1),
        _s("q4", 0.49),
    ]
    assert dream_questions(sessions, 10, solved_at=0.5) == ["q1", "q3", "q4"]
    assert dream_questions(sessions, 2, solved_at=0.5) == ["q1", "q3"]
    assert dream_questions(sessions, 10, solved_at=0.05) == ["q3"]
    assert dream_questions([_s("q1", 0.7)], 10, solved_at=0.5) == []


def test_a_trusted_session_the_reference_refutes_leaves_its_question_open():
    sessions = [{**_s("q1", 0.9), "answer": "wrong"}, {**_s("q2", 0.9), "answer": "right"}]
    assert dream_questions(sessions, 10, solved_at=0.5) == []
    assert dream_questions(sessions, 10, 0.5, accept=lambda q, a: a == "right") == ["q1"]


def _subplan(session_id, n):
    from cls_ray.consolidate.extract import Artifact

    content = {"question": f"q{n}", "docs": [], "steps": [], "next": f"step {session_id} {n}"}
    return Artifact("subplan", content, session_id, [0.9], 0.9)


def test_balance_repeats_the_least_solved_groups_up_to_a_bound():
    from cls_ray.consolidate.data import balance_groups
    from cls_ray.steps import StepFormat

    good = [_subplan("a", i) for i in range(12)]  # group "one hop": solved often
    good += [_subplan("b", i) for i in range(2)]  # group "two hops": solved twice
    good += [_subplan("c", i) for i in range(5)]  # group "three hops"
    group = {"a": "one hop", "b": "two hops", "c": "three hops"}
    pairs = balance_groups(good, group, StepFormat(), up_to=4)
    targets = [t for _, t in pairs]
    count = {g: sum(t.startswith(f"step {s} ") for t in targets) for s, g in group.items()}
    # the largest group as it was; the others towards it, each pair at most 4 times
    assert count == {"one hop": 12, "two hops": 8, "three hops": 12}
    assert all(targets.count(f"step b {i}") == 4 for i in range(2))
    assert set(targets) == {a.content["next"] for a in good}  # nothing dropped
    once = [t for _, t in balance_groups(good, group, StepFormat(), up_to=1)]
    assert sorted(once) == sorted(a.content["next"] for a in good)  # 1: as they come


def test_a_dream_is_checked_against_train_answers_only(tmp_path):
    """A reference answer judges a dream only for a question of the task's `train` split (the
    questions training may draw on): an `eval` question's answer never becomes a training
    signal, and a question the task does not know passes on the PRM alone."""
    import json

    from cls_ray.consolidate.dream import reference_check
    from cls_ray.task import FilesTask

    def lines(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    (tmp_path / "corpus.jsonl").write_text(lines([{"id": "d1", "text": "Ada wrote code."}]))
    (tmp_path / "train.jsonl").write_text(
        lines([{"id": "t1", "question": "Who wrote code?", "answers": ["Ada", "Ada Lovelace"]}])
    )
    (tmp_path / "eval.jsonl").write_text(
        lines([{"id": "e1", "question": "Who wrote the first program?", "answers": ["Ada"]}])
    )
    task = FilesTask(tmp_path)
    asked = [_s("Who wrote code?", 0.9), _s("Who wrote the first program?", 0.9), _s("Why?", 0.1)]
    accept = reference_check(task, asked)
    assert accept("Who wrote code?", "ada lovelace") and accept("Who wrote code?", "Ada")
    assert not accept("Who wrote code?", "Babbage") and not accept("Who wrote code?", None)
    assert accept("Who wrote the first program?", "anyone")  # eval: never a reference
    assert accept("Why?", "because")  # unknown to the task: the PRM alone
    assert reference_check(task, [_s("Why?", 0.1)]) is None


def _dream_cfg(further: bool):
    from types import SimpleNamespace

    c = SimpleNamespace(dream_n=4, dream_further=further, dream_backtrack=3, min_step_score=0.5)
    return SimpleNamespace(consolidate=c, rgr=SimpleNamespace(max_steps=5), grounded=True)


def test_a_refuted_dream_is_asked_again_one_step_further(monkeypatch):
    """Where the reference refutes a question's best dream, the question is sampled again with
    no answer before one step more than that dream took; what then checks joins, the rest
    stays refuted. A dream that never answered, or left no room for another step, is not
    asked again."""

    import cls_ray.consolidate.dream as dream

    def session(q, steps, answer):
        rows = [{"is_answer": False, "text": t, "retrieved": []} for t in steps]
        rows += [{"is_answer": True, "text": f"the answer is {answer} ."}] if answer else []
        scores = [0.9] + [0.1] * (len(rows) - 1)  # the PRM doubts the second step on
        return {"question": q, "answer": answer, "steps": rows, "prm_step_scores": scores}

    first = [
        session("q1", ["a", "b"], "right"),  # checks
        session("q2", ["a", "b"], "early"),  # refuted after 2 steps: asked again with floor 3
        session("q3", ["a"], "wrong"),  # floor 2: asked again, still wrong
        session("q4", ["a", "b", "c", "d"], "late"),  # floor 5 = max_steps: no room
        session("q5", ["a", "b"], None),  # never answered
    ]
    calls = []

    def fake_best_of_n(cfg, engine, retriever, prm, questions, n, seed, version, accept, **kw):
        calls.append((list(questions), kw.get("min_steps")))
        if not kw:
            return first, {"d1": "doc"}
        if "retry" in kw:  # retried: still wrong
            return [session(q, ["a", "x"], "no") for q in questions], {}
        return [session("q2", ["a", "b", "c"], "right"), session("q3", ["a", "b"], "no")], {}

    monkeypatch.setattr(dream, "best_of_n_sessions", fake_best_of_n)
    cfg = _dream_cfg(further=True)

    def accept(q, a):
        return a == "right"

    got, docs, counts = dream.dream_round(cfg, None, None, None, ["q1"], 0, accept)
    assert calls[1] == (["q2", "q3"], [3, 2])
    # retried from before their doubted step: not q2 (right one step further), nor q3 (the
    # PRM doubts only its answer)
    assert calls[2][0] == ["q4", "q5"]
    assert [s["question"] for s in got] == ["q1", "q2"] and docs == {"d1": "doc"}
    assert counts == {"refuted": 3, "further": 1, "backtracked": 0}
    cfg.consolidate.dream_further = False
    cfg.consolidate.dream_backtrack = 0
    calls.clear()
    got, _, counts = dream.dream_round(cfg, None, None, None, ["q1"], 0, accept)
    assert len(calls) == 1 and counts == {"refuted": 4, "further": 0, "backtracked": 0}


def _scored(q, steps, scores, answer):
    rows = [
        {"is_answer": False, "text": t, "query": f"{q} {t}", "retrieved": [{"id": t, "score": 1.0}]}
        for t in steps
    ]
    rows.append({"is_answer": True, "text": f"the answer is {answer} .", "retrieved": []})
    return {"question": q, "answer": answer, "steps": rows, "prm_step_scores": scores}


def test_a_retry_starts_before_the_first_doubted_step_and_withholds_it():
    """The retry of a refuted dream keeps the steps before the first one the PRM scores below
    the floor (with what each retrieved) and withholds that one there; a retry that goes wrong
    at the same step withholds both; one that goes wrong later starts again from there; none
    where only the answer is doubted, or where a retry's own prefix is."""
    from cls_ray.consolidate.dream import backtrack_point

    docs = {"e1": "the employer of X is E .", "h1": "the hq of E is C ."}
    d = _scored("q", ["e1", "h1", "h2"], [0.9, 0.1, 0.2, 0.1], "C")
    r = backtrack_point(d, docs, 0.5)
    assert r.question == "q" and r.avoid == {"h1"}
    assert [s.text for s in r.prefix] == ["e1"] and r.prefix[0].query == "q e1"
    assert [(x.id, x.text) for x in r.prefix[0].retrieved] == [("e1", docs["e1"])]
    again = backtrack_point(_scored("q", ["e1", "h3"], [0.9, 0.0, 0.0], "D"), docs, 0.5, r)
    assert again.avoid == {"h1", "h3"} and [s.text for s in again.prefix] == ["e1"]
    later = backtrack_point(
        _scored("q", ["e1", "p1", "x"], [0.9, 0.8, 0.1, 0.1], "D"), docs, 0.5, r
    )
    assert later.avoid == {"x"} and [s.text for s in later.prefix] == ["e1", "p1"]
    assert backtrack_point(_scored("q", ["e2"], [0.2, 0.1], "D"), docs, 0.5, r) is None
    assert backtrack_point(_scored("q", ["e1"], [0.9, 0.1], "D"), docs, 0.5) is None  # answer
    assert backtrack_point(_scored("q", ["e1"], [0.9, 0.9], "D"), docs, 0.5) is None


def test_a_refuted_dream_is_retried_until_it_checks_or_the_retries_run_out(monkeypatch):
    """`consolidate.dream_backtrack` retries: each from the dream before, the step it went
    wrong at withheld. q1 checks on the second retry; q2 never does and is retried three
    times; with 0 retries neither is."""

    import cls_ray.consolidate.dream as dream

    calls = []

    def fake_best_of_n(cfg, engine, retriever, prm, questions, n, seed, version, accept, **kw):
        calls.append(kw.get("retry"))
        if not kw:
            return [_scored(q, ["e1", "h1"], [0.9, 0.1, 0.1], "C") for q in questions], {}
        tries = len(calls) - 1
        out = []
        for r in kw["retry"]:
            right = r.question == "q1" and tries == 2
            out.append(
                _scored(
                    r.question, ["e1", f"h{tries + 1}"], [0.9, 0.1, 0.1], "right" if right else "C"
                )
            )
        return out, {}

    monkeypatch.setattr(dream, "best_of_n_sessions", fake_best_of_n)
    cfg = _dream_cfg(further=False)
    got, _, counts = dream.dream_round(
        cfg, None, None, None, ["q1", "q2"], 0, lambda q, a: a == "right"
    )
    assert [s["question"] for s in got] == ["q1"]
    assert counts == {"refuted": 1, "further": 0, "backtracked": 1}
    assert [[r.question for r in c] for c in calls[1:]] == [["q1", "q2"], ["q1", "q2"], ["q2"]]
    assert calls[2][0].avoid == {"h1", "h2"} and calls[3][0].avoid == {"h1", "h2", "h3"}
    cfg.consolidate.dream_backtrack = 0
    calls.clear()
    got, _, counts = dream.dream_round(
        cfg, None, None, None, ["q1", "q2"], 0, lambda q, a: a == "right"
    )
    assert len(calls) == 1 and counts == {"refuted": 2, "further": 0, "backtracked": 0}


def test_a_retry_reaches_decoding_with_its_prefix_and_what_it_withholds():
    """Through best of N and RGR (a model that takes the first step offered): every sample of
    a retry starts from its recorded prefix (what it retrieved stays, what it cited is not
    retrieved again), the withheld step is not offered at the first step after it though its
    document is in the context, and it is offered again at the step after that."""
    from types import SimpleNamespace

    import pytest

    from cls_ray.consolidate.dream import Retry, best_of_n_sessions
    from cls_ray.memory.documents import RetrievedDoc
    from cls_ray.rgr import StepRecord

    texts = {
        "e": "the employer of X is E .",
        "h": "the hq of E is C .",
        "p": "the partner of E is P .",
    }

    class Retriever:
        def retrieve(self, queries, k, exclude=None):
            return [
                [
                    RetrievedDoc(i, 1.0, t)
                    for i, t in texts.items()
                    if i not in (exclude or [()])[j]
                ][:k]
                for j in range(len(queries))
            ]

    contexts, offered = {}, []  # each sample's documents by steps so far; choices per decode

    class Engine:
        version = "v"

        def render(self, question, docs, steps):
            contexts.setdefault(len(steps), []).append(list(docs))
            return question

        def generate(self, prompts, temperature=0.0, seed=None, choices=None):
            offered.append(choices)
            return [SimpleNamespace(text=c[0], token_ids=[1], logprobs=[0.0]) for c in choices]

    cfg = SimpleNamespace(
        rgr_options=lambda: {"top_k": 3, "max_steps": 4, "grounded": True},
        prm=SimpleNamespace(sample_temperature=1.0, aggregation="min"),
    )
    prm = SimpleNamespace(score_many=lambda items: [[0.9] * len(s) for _, s, _ in items])
    first = StepRecord(texts["e"], "q", [RetrievedDoc("e", 0.5, texts["e"])], ["e"], [7], [-0.1])
    retry = Retry("q", [first], frozenset({texts["h"]}))
    got, docs = best_of_n_sessions(cfg, Engine(), Retriever(), prm, ["q"], 2, retry=[retry])
    steps = got[0]["steps"]
    assert steps[0]["text"] == texts["e"] and steps[0]["token_ids"] == [7]
    assert [r["id"] for r in steps[0]["retrieved"]] == ["e"]
    assert [s["text"] for s in steps[1:3]] == [texts["p"], texts["h"]]
    assert min(contexts) == 1 and len(contexts[1]) == 2  # both samples start after the prefix
    assert all(texts["h"] in c for c in contexts[1])  # both samples see the withheld document
    assert all(texts["h"] not in o and texts["p"] in o for o in offered[0])
    assert all(texts["h"] in o for o in offered[1])  # offered again one step later
    assert all(texts["e"] not in c for c in contexts[1])  # cited in the prefix: not again
    assert docs == texts  # the texts of what every step retrieved, the prefix's too
    with pytest.raises(ValueError, match="retry: one per question"):
        best_of_n_sessions(cfg, Engine(), Retriever(), prm, ["other"], 2, retry=[retry])


def test_where_the_gate_trusts_no_session_the_current_version_dreams_first(monkeypatch, tmp_path):
    """Every session refuted (nothing to train a first candidate on): the current version
    dreams, the candidate trains on what its dream found; and where no dream is found either,
    the sleep says nothing passed."""
    from types import SimpleNamespace

    import pytest

    import cls_ray.consolidate.candidate as candidate

    trained, engines = [], []

    def fake_train(cfg, method, batch, pairs, out, log, known, start, trust=None):
        trained.append(list(pairs))
        out.mkdir(parents=True)
        return {"first_loss": 1.0, "loss": 0.5}

    def fake_pairs(sessions, docs, cfg, task, known, **kw):
        good = [s for s in sessions if s.get("r_tau")]
        return [("p", s["question"]) for s in good], {"a_good": len(good), "new_pairs": 1}, good

    found = [{"question": "q1", "r_tau": 0.9, "answer": "right"}]

    def fake_dream(cfg, engine, memory, prm, questions, seed, accept):
        engines.append(engine)
        return list(found), {}, {"refuted": 0, "further": 0, "backtracked": 0}

    monkeypatch.setattr(candidate, "train_candidate", fake_train)
    monkeypatch.setattr(candidate, "sessions_to_pairs", fake_pairs)
    monkeypatch.setattr(candidate, "dream_round", fake_dream)
    monkeypatch.setattr(candidate, "build_engine", lambda cfg, name, path: f"engine of {path.name}")
    c = SimpleNamespace(
        dream_rounds=1, min_r_tau=0.5, dream_until=None, dream_questions=8, seed=0, dream_n=2
    )
    stack = SimpleNamespace(
        cfg=SimpleNamespace(consolidate=c), task=SimpleNamespace(check=None), engine="current"
    )
    batch = SimpleNamespace(sessions=[{"question": "q1", "r_tau": None}], doc_texts={}, replayed=[])
    services = SimpleNamespace(memory=None)
    args = (stack, batch, services, object(), "sft", [], tmp_path / "cand", None, None, print)
    train, rows, learned = candidate.train_with_dreams(*args, accept=None, trust=None, a_good=0)
    assert engines == ["current"] and trained == [[("p", "q1")]]
    assert (tmp_path / "cand").is_dir() and rows[0]["trained"] and learned == found
    found.clear()
    engines.clear()
    with pytest.raises(ValueError, match="nothing passed the PRM gate, nor did any dream"):
        candidate.train_with_dreams(
            *args[:6], tmp_path / "none", *args[7:], accept=None, trust=None, a_good=0
        )
    assert engines == ["current"] and not (tmp_path / "none").exists()
