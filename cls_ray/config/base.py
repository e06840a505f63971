"""What every config section shares: unknown keys are refused, assignments validated."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config that cannot be used; the message names file, line, field and expectation."""


def expand_env(value: str, field: str) -> str:
    """`value` with `${VAR}` read from the environment; a clear error when VAR is unset."""
    if "${" not in value:
        return value
    out = os.path.expandvars(value)
    if "${" in out:
        missing = out[out.index("${") + 2 :].split("}")[0]
        raise ConfigError(f"{field} reads ${{{missing}}} from the environment, which is not set")
    return out
