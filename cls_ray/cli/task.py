"""`cls-ray task show | export-world DIR`: what the configured task holds; the built-in world
written in the files format (so the files path can be measured against the world path)."""

from __future__ import annotations

from cls_ray.config import Config
from cls_ray.stack import Stack
from cls_ray.task import SPLITS, WorldTask, export_task
from cls_ray.world import build_world


def cmd_task(args, cfg: Config) -> dict:
    if args.action == "export-world":
        if not args.out:
            raise ValueError("give the folder to write: cls-ray task export-world DIR")
        task = WorldTask(build_world(cfg.world))
        counts = export_task(task, args.out, per_group=args.per_family)
        print(
            f"wrote the world (seed {cfg.world.seed}) to {args.out}: "
            + ", ".join(f"{n} {k}" for k, n in counts.items())
            + f"; new groups {', '.join(task.new_groups)}"
        )
        return {"out": args.out, **counts, "new_groups": list(task.new_groups)}
    task = Stack(cfg).task
    out: dict = {
        "name": task.name,
        "answer_check": task.check.kind,
        "new_groups": list(task.new_groups),
    }
    print(f"task {task.name} ({cfg.task.kind}); answers checked by {task.check.kind}")
    for split in SPLITS:
        qs = task.questions(split)
        by_group: dict[str, int] = {}
        for q in qs:
            by_group[q.group or "-"] = by_group.get(q.group or "-", 0) + 1
        out[split] = {"questions": len(qs), "groups": by_group}
        print(f"  {split:10} {len(qs):6} questions in {len(by_group)} group(s)")
    if task.new_groups:
        print(f"  new groups: {', '.join(task.new_groups)}")
    return out
