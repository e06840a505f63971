"""The process reward model: labels, model, training on Ray Train, aggregation into R(τ)."""

from cls_ray.prm.aggregate import AGGREGATIONS, aggregate_step_scores

__all__ = ["AGGREGATIONS", "aggregate_step_scores"]
