"""The consolidation job's own torch threads (`consolidate.threads`): Ray starts a task with
one, which would leave the other cores idle through a sleep's measurements and dreams."""

from __future__ import annotations

import os

import pytest
import ray
import torch

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0, max_calls=1)  # as `consolidation_job` starts, in a fresh process
def threads_in_a_task(threads: int | None) -> tuple[int, int]:
    from actors.consolidation import use_threads

    before = torch.get_num_threads()
    use_threads(threads)
    return before, torch.get_num_threads()


def test_the_sleep_takes_the_threads_its_config_gives_inside_a_ray_task(ray_local):
    cores = len(os.sched_getaffinity(0))
    assert ray.get(threads_in_a_task.remote(None), timeout=300) == (1, 1)  # Ray's one
    assert ray.get(threads_in_a_task.remote(0), timeout=300) == (1, cores)  # every core
    assert ray.get(threads_in_a_task.remote(2), timeout=300) == (1, 2)
