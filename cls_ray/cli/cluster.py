"""`cls-ray cluster render`: the KubeRay manifests under `cluster/kuberay/`, built from a config;
`--check` fails when the committed files drifted from what the config builds."""

from __future__ import annotations

import sys
from pathlib import Path

from cls_ray.cluster import IMAGE, manifests, render, render_text
from cls_ray.config import Config


def cmd_cluster(args, cfg: Config) -> dict:
    if not args.config:
        raise ValueError("--config names the cluster config the manifests are built from")
    image = args.image or IMAGE
    out = Path(args.out)
    if args.check:
        stale = [
            name
            for name, docs in manifests(cfg, args.config, image).items()
            if not (out / name).exists()
            or (out / name).read_text() != render_text(docs, args.config)
        ]
        for name in stale:
            print(f"{out / name}: differs from what {args.config} builds", file=sys.stderr)
        if stale:
            raise ValueError(f"{len(stale)} manifest(s) drifted: run `cls-ray cluster render`")
        print(f"{out}: up to date with {args.config}")
        return {"stale": []}
    paths = render(cfg, args.config, out, image)
    for p in paths:
        print(f"wrote {p}")
    return {"written": [str(p) for p in paths]}
