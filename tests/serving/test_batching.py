"""How an ingress groups sessions and a generator groups prompts so each round is one call."""

from cls_ray.serving.batching import generation_groups, session_groups, slices


def _req(**kw) -> dict:
    return {"mode": "rgr", "top_k": None, "max_steps": None, "temperature": 0.0, "best_of": 1, **kw}


def test_sessions_run_in_lock_step_only_with_the_same_settings():
    reqs = [_req(), _req(best_of=4), _req(), _req(mode="none"), _req(best_of=4)]
    groups = session_groups(reqs)
    assert sorted(groups.values()) == [[0, 2], [1, 4], [3]]


def test_a_generator_batch_groups_prompts_by_version_temperature_and_grammar():
    groups = [
        {"prompts": ["a", "b"], "choices": [["x"], ["y"]], "temperature": 0.0, "version": None},
        {"prompts": ["c"], "choices": None, "temperature": 0.0, "version": "v2"},
        {"prompts": ["d"], "choices": [["z"]], "temperature": 0.0, "version": "v1"},
        {"prompts": ["e"], "choices": [["w"]], "temperature": 1.0},
    ]
    plan = generation_groups(groups, current="v1")
    assert plan == {
        ("v1", 0.0, True): [(0, 0), (0, 1), (2, 0)],
        ("v2", 0.0, False): [(1, 0)],
        ("v1", 1.0, True): [(3, 0)],
    }


def test_a_call_larger_than_a_batch_goes_in_slices():
    assert slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert slices(3, None) == [slice(0, 3)]
    assert slices(0, 4) == []
