"""Batches of like lengths: the bootstrap's endless stream holds the same items as random
batches would, with far less padding."""

import random

from cls_ray.bootstrap import length_buckets


def _padding(batches: list[list[int]]) -> float:
    """Share of a padded batch that is padding, over all batches."""
    total = sum(len(b) * max(b) for b in batches)
    return 1 - sum(sum(b) for b in batches) / total


def test_the_bootstrap_stream_draws_at_random_in_batches_of_like_length():
    rng = random.Random(0)
    draw = lambda: ("x" * rng.randint(10, 200), "y")  # noqa: E731
    stream = length_buckets(draw, 8, random.Random(2), pool=4)
    batches = [next(stream) for _ in range(12)]
    assert all(len(b) == 8 for b in batches)
    lengths = [[len(p) for p, _ in b] for b in batches]
    assert _padding(lengths) < 0.2
    assert len({max(b) for b in lengths}) > 6  # long and short batches both
