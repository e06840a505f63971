"""`python -m cls_ray.cli <command>`: the entry point of jobs submitted to a Ray cluster."""

import sys

from cls_ray.cli.main import main

sys.exit(main())
