"""Tokenizer, small-model bootstrap and loading."""

from cls_ray.model.loading import load_model_and_tokenizer
from cls_ray.model.tokenizer import build_world_tokenizer

__all__ = ["build_world_tokenizer", "load_model_and_tokenizer"]
