from cls_ray.rgr import step_query


def test_step_query_without_steps_is_the_question():
    q = "what is the founder of the employer of Alice Porter ?"
    assert step_query(q, []) == q


def test_step_query_moves_to_the_bridge_entity_and_what_is_still_asked():
    q = "what is the founder of the employer of Alice Porter ?"
    s1 = "the employer of Alice Porter is Falcon Labs ."
    assert step_query(q, [s1]) == "Falcon Labs what founder"
    q3 = "what is the birthplace of the founder of the employer of Alice Porter ?"
    s2 = "the founder of Falcon Labs is Bruno Silva ."
    assert step_query(q3, [s1, s2]) == "Bruno Silva what birthplace"


def test_step_query_falls_back_to_the_question():
    q = "what is the mentor of Alice Porter ?"
    # A step that adds nothing new and covers the whole question.
    assert step_query(q, [q]) == q
