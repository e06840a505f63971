"""`cls-ray ask`: RGR on one question, through the served stack when it is up, else here."""

from __future__ import annotations

from cls_ray.cli.format import print_reply, print_trajectory
from cls_ray.cli.http import http_json, stack_up, url
from cls_ray.config import Config
from cls_ray.rgr import run_rgr
from cls_ray.stack import Stack


def cmd_ask(args, cfg: Config) -> dict:
    question = args.question
    if not args.local and question and stack_up(cfg):
        res = http_json("POST", url(cfg) + "/v1/rgr", {"question": question, "mode": args.mode})
        if not args.json:
            print_reply(question, res)
        return res
    stack = Stack(cfg)
    if not question:
        task = stack.task  # a held-out question of the most hops the task has
        qs = task.questions("retention", per_group=1) or task.questions("eval", per_group=1)
        if not qs:
            raise SystemExit(f"cls-ray ask: give a question (task {task.name} has none)")
        question = max(qs, key=lambda q: q.hops).question
    if not question.strip():
        raise SystemExit("cls-ray ask: the question is empty")
    tr = run_rgr(
        [question],
        stack.engine,
        None if args.mode == "none" else stack.retriever,
        mode=args.mode,
        temperature=cfg.engine.temperature,
        **cfg.rgr_options(),
    )[0]
    if not args.json:
        print_trajectory(tr)
    return tr.to_dict()
