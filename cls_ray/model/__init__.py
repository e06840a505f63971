"""The model: the world tokenizer, the small Llama built in code, loading any checkpoint by
path, LoRA adapters, and training examples as tensors (bootstrap training: `cls_ray.bootstrap`)."""

from cls_ray.model.loading import load_model_and_tokenizer
from cls_ray.model.tokenizer import build_world_tokenizer

__all__ = ["build_world_tokenizer", "load_model_and_tokenizer"]
