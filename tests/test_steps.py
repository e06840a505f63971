from cls_ray.steps import answer_step, cite, clean_step, compact_prompt, parse_answer


def test_parse_answer_forms():
    assert parse_answer("the answer is Falcon Labs .") == "Falcon Labs"
    assert parse_answer("Answer: Boston Falls") == "Boston Falls"
    assert parse_answer("Answer: Boston Falls [2]") == "Boston Falls"
    assert parse_answer("the employer of Alice Porter is Falcon Labs .") is None
    assert parse_answer(answer_step("X Y")) == "X Y"


def test_cite_prefers_markers_then_best_overlap():
    docs = [
        "the employer of Alice Porter is Falcon Labs .",
        "the employer of Alice Parker is Falcon Works .",
        "the mentor of Alice Porter is Bruno Silva .",
    ]
    assert cite("the employer of Alice Porter is Falcon Labs .", docs) == [0]
    assert cite("Alice works at Falcon [2].", docs) == [1]
    assert cite("the answer is Bruno Silva .", docs) == []
    assert cite("anything", []) == []
    assert cite("out of range [9]", docs) == []


def test_compact_prompt_layout_and_clean_step():
    p = compact_prompt("what is the mentor of A B ?", ["d1 .", "d2 ."], ["s1 ."])
    assert p == "question: what is the mentor of A B ? doc: d1 . doc: d2 . step: s1 . step:"
    assert clean_step("  a  b \nrest") == "a b"


def test_grounded_choices_without_answers_keep_only_the_documents_sentences():
    from cls_ray.steps import grounded_choices, parse_answer

    docs = ["the rival of Ann Lee is Bo Kim .", "the employer of Bo Kim is Acme ."]
    steps = ["the rival of Ann Lee is Bo Kim ."]
    full = grounded_choices("who is the rival of Ann Lee ?", docs, steps)
    held = grounded_choices("who is the rival of Ann Lee ?", docs, steps, answers=False)
    assert held == docs and any(parse_answer(c) for c in full)
    assert not any(parse_answer(c) for c in held)
    # nothing to restate: the answers stay (a step must be possible)
    assert grounded_choices("q ?", [], steps, answers=False) == grounded_choices("q ?", [], steps)
