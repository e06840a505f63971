"""A sleep's schedule follows its data: `consolidate.epochs` passes over its pairs, so a sleep
the PRM gate leaves with a third of the pairs takes a third of the steps, not three times the
passes."""

import pytest
from pydantic import ValidationError

from cls_ray.config import Config
from cls_ray.consolidate.sft import sleep_steps


def section(**kw):
    return Config.model_validate({"consolidate": kw}).consolidate


def test_steps_are_epochs_over_the_pairs_at_the_global_batch():
    c = section(epochs=3, batch_size=16, num_workers=2, min_steps=20, steps=150)
    assert sleep_steps(c, 640) == 60  # 3 x 640 / 32
    assert sleep_steps(c, 650) == 61  # a part batch is a step
    # A third of the pairs, a third of the steps: every pair is seen as often.
    assert sleep_steps(c, 3 * 640) == 150 and sleep_steps(c, 2 * 640) == 120


def test_the_bounds_hold_and_null_epochs_keeps_the_constant():
    c = section(epochs=3, batch_size=16, num_workers=2, min_steps=20, steps=150)
    assert sleep_steps(c, 10) == 20  # at least min_steps
    assert sleep_steps(c, 100_000) == 150  # at most steps
    assert sleep_steps(section(epochs=None, steps=150), 10) == 150
    with pytest.raises(ValidationError, match="epochs"):
        section(epochs=0)
