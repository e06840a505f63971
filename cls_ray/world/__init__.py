"""The built-in multi-hop knowledge world: corpus, questions, training episodes and verifier."""

from cls_ray.world.core import (
    RELATIONS,
    Document,
    Fact,
    Question,
    Relation,
    World,
    WorldConfig,
    build_world,
)
from cls_ray.world.verifier import StepLabel, parse_fact, trajectory_correct, verify_trajectory

__all__ = [
    "RELATIONS",
    "Document",
    "Fact",
    "Question",
    "Relation",
    "StepLabel",
    "World",
    "WorldConfig",
    "build_world",
    "parse_fact",
    "trajectory_correct",
    "verify_trajectory",
]
