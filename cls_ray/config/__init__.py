"""One typed config schema for the whole system, loaded from `configs/*.yaml`.

Every section forbids unknown keys, so a typo stops at load with a message that names the file,
the line, the field and what was expected. CLI overrides use dotted paths: `rgr.top_k=6`.
"""

from cls_ray.config.base import ConfigError, Section, expand_env
from cls_ray.config.loader import load_config, with_overrides
from cls_ray.config.schema import Config

__all__ = ["Config", "ConfigError", "Section", "expand_env", "load_config", "with_overrides"]
