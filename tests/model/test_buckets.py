"""Batches of like lengths: the bootstrap's endless stream and the trainers' epochs hold the
same items as random batches would, with far less padding."""

import random

from cls_ray.bootstrap import length_buckets
from cls_ray.distributed import bucketed


def _padding(batches: list[list[int]]) -> float:
    """Share of a padded batch that is padding, over all batches."""
    total = sum(len(b) * max(b) for b in batches)
    return 1 - sum(sum(b) for b in batches) / total


def test_an_epoch_in_buckets_keeps_every_item_once_and_pads_less():
    rng = random.Random(0)
    sizes = [rng.randint(10, 200) for _ in range(1000)]
    order = list(range(len(sizes)))
    rng.shuffle(order)
    out = bucketed(order, lambda i: sizes[i], 16, random.Random(1))
    assert all(len(b) == 16 for b in out)
    assert {i for b in out for i in b} == set(order)  # every item of the epoch is trained on
    assert sum(map(len, out)) - len(order) < 16  # a few twice, to fill the last batch
    cut = [[sizes[i] for i in b] for b in out]
    plain = [[sizes[i] for i in order[k : k + 16]] for k in range(0, len(order), 16)]
    assert _padding(cut) < 0.1 < 0.3 < _padding(plain)
    # the batches come in random order, not shortest first
    firsts = [max(b) for b in cut]
    assert firsts != sorted(firsts)
    # an epoch smaller than a batch still makes a full batch, of every item
    (small,) = bucketed([3, 1, 2], lambda i: i, 4, random.Random(0))
    assert len(small) == 4 and set(small) == {1, 2, 3}


def test_every_count_of_rows_gives_full_batches_of_every_row():
    """Counts just past a pool (16 batches of 16, or of 8) leave a short last pool."""
    for n, batch in [(1, 16), (15, 16), (16, 16), (257, 16), (271, 16), (513, 16), (527, 16),
                     (129, 8), (1375, 16)]:  # fmt: skip
        order = list(range(n))
        random.Random(n).shuffle(order)
        out = bucketed(order, lambda i: i % 97, batch, random.Random(0))
        assert all(len(b) == batch for b in out), n
        assert {i for b in out for i in b} == set(order), n
        assert max(n, batch) <= sum(map(len, out)) < max(n, batch) + batch, n


def test_ranks_that_share_the_order_seed_train_alike_lengths_together():
    sizes = [random.Random(i).randint(10, 200) for i in range(512)]
    per_rank = []
    for rank in range(2):
        mine = list(range(rank, 512, 2))
        random.Random(rank).shuffle(mine)
        out = bucketed(mine, lambda i: sizes[i], 16, random.Random(rank), pool=4,
                       order_rng=random.Random(0))  # fmt: skip
        per_rank.append([max(sizes[i] for i in b) for b in out])
    waits = [abs(a - b) for a, b in zip(*per_rank, strict=True)]
    assert sum(waits) / len(waits) < 15  # the longest rows of the two ranks' batches, step by step


def test_the_bootstrap_stream_draws_at_random_in_batches_of_like_length():
    rng = random.Random(0)
    draw = lambda: ("x" * rng.randint(10, 200), "y")  # noqa: E731
    stream = length_buckets(draw, 8, random.Random(2), pool=4)
    batches = [next(stream) for _ in range(12)]
    assert all(len(b) == 8 for b in batches)
    lengths = [[len(p) for p, _ in b] for b in batches]
    assert _padding(lengths) < 0.2
    assert len({max(b) for b in lengths}) > 6  # long and short batches both
