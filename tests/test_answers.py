"""Answer checking as QA measures it: SQuAD normalization, exact match and token F1 over aliases."""

from cls_ray.answers import EXACT, AnswerCheck, exact_match, normalize, token_f1


def test_normalization_drops_case_punctuation_and_articles():
    assert normalize("The Falcon  Labs.") == "falcon labs"
    assert normalize("an Apple, a day") == "apple day"
    assert normalize(None) == ""


def test_exact_match_accepts_any_alias():
    assert exact_match("the answer is NYC", ["New York City", "NYC"]) == 0.0
    assert exact_match("nyc", ["New York City", "NYC"]) == 1.0
    assert exact_match(None, ["x"]) == 0.0
    assert EXACT("Falcon Labs .", ["Falcon Labs"]) and not EXACT("Falcon Lab", ["Falcon Labs"])


def test_token_f1_is_squads_and_takes_the_best_alias():
    # prediction "falcon labs inc" vs gold "falcon labs": p = 2/3, r = 1, F1 = 0.8
    assert abs(token_f1("Falcon Labs Inc", ["Falcon Labs"]) - 0.8) < 1e-9
    assert token_f1("Falcon Labs Inc", ["Echo Works", "Falcon Labs Inc."]) == 1.0
    assert token_f1("Echo", ["Falcon Labs"]) == 0.0
    assert token_f1("", [""]) == 1.0  # both empty after normalizing: SQuAD counts a match


def test_an_f1_check_has_a_threshold():
    check = AnswerCheck("f1", 0.75)
    assert check("Falcon Labs Inc", ["Falcon Labs"])  # 0.8
    assert not check("Falcon", ["Falcon Labs"])  # 2/3
    assert check.score("Falcon", ["Falcon Labs"]) == 2 / 3
