"""The `cls-ray` command line (`cls_ray.cli.main`), the composition root of the system."""

from cls_ray.cli.main import main

__all__ = ["main"]
