"""How `cls-ray bench autoscale` reads its timeline of `(t_s, running, starting)` samples."""

from cls_ray.eval.bench_autoscale import added_not_serving, at_rest, first_time, replica_cpus

AT_REST = [(0.0, 1, 0), (1.0, 1, 0)]


def test_a_replica_still_starting_keeps_the_load_on_until_it_serves():
    deciding = [*AT_REST, (5.0, 1, 2), (9.0, 1, 2)]
    assert not added_not_serving(AT_REST, 0.0, 1)  # nothing decided: the load may end
    assert added_not_serving(deciding, 0.0, 1)  # decided, not serving: go on
    assert not added_not_serving([*deciding, (40.0, 3, 0)], 0.0, 1)  # serving: done
    assert not added_not_serving(deciding, 10.0, 1)  # only samples since the load began count


def test_the_scale_down_waits_for_starting_replicas_too():
    after = [(30.0, 3, 0), (35.0, 1, 2), (50.0, 1, 0)]
    # One running replica is not "back at rest" while two more are still starting.
    assert [at_rest(s, 1) for s in after] == [False, False, True]
    assert first_time(after, 30.0, lambda n, st: at_rest((0, n, st), 1)) == 20.0
    assert first_time(after, 30.0, lambda n, st: n > 1) == 0.0


def test_replicas_share_what_the_rest_of_the_app_leaves():
    assert replica_cpus(8.0, 4) == 1.0
    assert replica_cpus(2.0, 3) == 0.33
    assert replica_cpus(1.1, 4) is None
