"""Replay draws from every learned skill: the buffer's replay sample and its compaction keep a
share per skill (stratum), so the first skill stays in the replay however many sessions later
skills bring."""

from collections import Counter

from cls_ray.replay import ReplayBuffer
from cls_ray.replay.sampling import balanced
from tests.helpers import make_session


def test_a_balanced_sample_shares_n_equally_as_far_as_each_stratum_can():
    items = (
        [("a", i) for i in range(90)] + [("b", i) for i in range(4)] + [("c", i) for i in range(30)]
    )
    got = balanced(items, lambda t: t[0], 24, seed=1)
    assert len(got) == 24 and len(set(got)) == 24
    assert Counter(k for k, _ in got) == {"a": 10, "b": 4, "c": 10}  # b keeps all it has
    assert sorted(balanced(items, lambda t: t[0], 500)) == sorted(items)  # n > items: all
    one = balanced(list(range(50)), lambda _: "", 10, seed=3)  # one stratum: a random sample
    assert len(set(one)) == 10 and one != list(range(10))
    assert balanced(items, lambda t: t[0], 24, seed=1) == got  # the seed decides


def test_compaction_keeps_a_share_of_every_skill(tmp_path):
    buf = ReplayBuffer(tmp_path / "buf", seal_every=8)
    ids = [buf.add(make_session(i)) for i in range(40)]
    buf.ack(ids)
    # The first skill's 4 sessions among 36 of the latest: a plain sample of 10 would keep
    # one of them on average; a share per skill keeps all 4.
    strata = {i: ("skill-1" if n < 4 else "skill-2") for n, i in enumerate(ids)}
    out = buf.compact(keep_replay=10, seed=0, strata=strata)
    assert out == {"dropped": 30, "kept_replay": 10, "sessions": 10}
    kept = [s.id for s in buf.replay_sample(10, strata=strata)]
    assert Counter(strata[i] for i in kept) == {"skill-1": 4, "skill-2": 6}
    buf.close()
    again = ReplayBuffer(tmp_path / "buf")  # what compaction kept survives a restart
    assert sorted(s.id for s in again.replay_sample(10)) == sorted(kept)
    # The replay sample itself shares n across skills too.
    few = [s.id for s in again.replay_sample(4, strata=strata)]
    assert Counter(strata[i] for i in few) == {"skill-1": 2, "skill-2": 2}


def test_a_sleep_replays_every_skill_it_has_sessions_of(tiny_stack):
    """Replayed sessions of two earlier skills, 8 of one and 1 of the other: the sleep's replayed
    pairs (half the replay at most) come from both, an equal share each."""
    from cls_ray.consolidate.data import KnownSkills, corrected_sessions, sessions_to_pairs

    world, cfg = tiny_stack.world, tiny_stack.cfg

    def two_hop(fams):
        return [f for f in fams if any(q.hops == 2 for q in world.questions("train", [f]))]

    first, second = two_hop(world.held_back_families)[:2]
    now = two_hop(world.trained_families)[0]
    by_fam = {
        f: [q for q in world.questions("train", [f]) if q.hops == 2] for f in (first, second, now)
    }

    def curated(qs, tag):
        sessions = [
            {
                "id": f"{tag}{i}",
                "question": q.text,
                "steps": [],
                "answer": None,
                "model_version": "base",
                "feedback": [{"corrected_steps": q.gold_steps, "rating": 1, "role": "curator"}],
            }
            for i, q in enumerate(qs)
        ]
        return corrected_sessions(sessions, tiny_stack.retriever, cfg.rgr.top_k)

    replayed, docs = curated(by_fam[first][:8] + by_fam[second][:1], "old")
    new, more = curated(by_fam[now][:1], "new")
    known = KnownSkills(tiny_stack.task, tiny_stack.retriever, cfg, tiny_stack.engine.format)
    pairs, stats, _ = sessions_to_pairs(
        new, {**docs, **more}, cfg, tiny_stack.task, known, replayed=replayed
    )
    assert stats["replayed_session_pairs"] >= 2
    second_q = by_fam[second][0].text
    from_second = [p for p in pairs if second_q in p[0]]
    from_first = [p for p in pairs if any(q.text in p[0] for q in by_fam[first][:8])]
    assert from_second and from_first
    assert abs(len(from_second) - len(from_first)) <= 1  # an equal share each


def _right_and_wrong(tiny_stack):
    """Two curated sessions on one-hop train questions of the held-back families, both
    trusted (R(τ) 1.0): "right" ends in the reference answer, "wrong" names someone else."""
    from cls_ray.consolidate.data import corrected_sessions

    world, cfg = tiny_stack.world, tiny_stack.cfg
    right, wrong = [q for q in world.questions("train", world.held_back_families) if q.hops == 1][
        :2
    ]
    other = next(
        e
        for e, t in world.entities.items()
        if t == world.entities[wrong.answer] and e != wrong.answer
    )
    lie = [*wrong.gold_steps[:-1], f"the answer is {other} ."]
    raw = [
        {
            "id": tag,
            "question": q.text,
            "steps": [],
            "answer": None,
            "model_version": "base",
            "feedback": [{"corrected_steps": steps, "rating": 1, "role": "curator"}],
        }
        for tag, q, steps in (("right", right, right.gold_steps), ("wrong", wrong, lie))
    ]
    return corrected_sessions(raw, tiny_stack.retriever, cfg.rgr.top_k)


def test_a_session_the_reference_answer_refutes_is_not_trained_on(tiny_stack):
    """With the task's reference check, the sleep leaves the session whose answer the reference
    refutes out of A_good and its pairs, and counts it; without, both are kept."""
    from cls_ray.consolidate.data import KnownSkills, sessions_to_pairs
    from cls_ray.consolidate.dream import reference_check

    cfg = tiny_stack.cfg
    sessions, docs = _right_and_wrong(tiny_stack)
    known = KnownSkills(tiny_stack.task, tiny_stack.retriever, cfg, tiny_stack.engine.format)
    accept = reference_check(tiny_stack.task, sessions)
    assert accept is not None
    _, stats, good = sessions_to_pairs(sessions, docs, cfg, tiny_stack.task, known, accept=accept)
    assert stats["sessions"] == 2 and stats["refuted_sessions"] == 1
    assert {a.session_id for a in good} == {"right-corrected"}
    _, stats, good = sessions_to_pairs(sessions, docs, cfg, tiny_stack.task, known)
    assert stats["refuted_sessions"] == 0
    assert {a.session_id for a in good} == {"right-corrected", "wrong-corrected"}


def test_the_ablation_baselines_keep_what_their_gate_names(tiny_stack):
    """The two sessions, now doubted by the PRM (every step 0.1): the system's gate ("prm")
    keeps neither, the ungated baseline ("none") both, the outcome baseline ("outcome") the one
    whose answer the reference accepts, whatever the PRM said (the ablation's arms)."""
    from cls_ray.consolidate.data import KnownSkills, sessions_to_pairs
    from cls_ray.consolidate.evaluate import question_index

    cfg, task = tiny_stack.cfg, tiny_stack.task
    sessions, docs = _right_and_wrong(tiny_stack)
    for s in sessions:
        s["prm_step_scores"], s["r_tau"] = [0.1] * len(s["steps"]), 0.1
    known = KnownSkills(task, tiny_stack.retriever, cfg, tiny_stack.engine.format)
    gold = {q.question: q.answers for q in question_index(task).values()}
    kept = {}
    for mode in ("prm", "none", "outcome"):
        _, _, good = sessions_to_pairs(
            sessions, docs, cfg, task, known, mode, gold, check=task.check
        )
        kept[mode] = {a.session_id for a in good}
    assert kept == {
        "prm": set(),
        "none": {"right-corrected", "wrong-corrected"},
        "outcome": {"right-corrected"},
    }
