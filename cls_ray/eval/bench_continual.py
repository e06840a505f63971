"""`cls-ray bench continual`: many sleeps, one skill after another, with forgetting measured.

The world holds back a sequence of skills (`world.held_back_sequence`, each a relation with its
1- to 3-hop families). For each composition arm (`arms_of`: the adapter trained further, a fresh
adapter on the base each sleep, or every weight under ZeRO-3), on a copy of the state
directory that starts at the base model: sleep k learns skill k from sessions found by best of N
with the PRM (as users asking for it would), replaying the sessions of every earlier skill (an
equal share per group, that is per family); the gate decides, and a promoted candidate is the version the next sleep
starts from; a refused sleep's sessions go to the next sleep again with its own, as the
buffer gives them (`Unacked`). Before the first sleep and after every sleep, every skill is measured by greedy RGR
on its held-out questions, the families the model was built on as one column (`base`).

The result per arm: the accuracy matrix (rows: before, after sleep 1..K; columns: base, skill
1..K), `final_average` (the last row's mean), `max_forgetting` (the largest drop of any skill
from its best score since it was learned) and `backward_transfer` (the mean change of each
earlier skill from right after its sleep to the end; a refused skill counts as never learned);
per sleep, the KL of the candidate to the version before it on the new skill's prompts next to
the forgetting the candidate showed on the earlier skills (its own measurements, promoted or
not), and across all sleeps their correlation (does the KL warn of forgetting, as RL's Razor reports?).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cls_ray.config import Config
from cls_ray.consolidate.candidate import SleepBatch
from cls_ray.consolidate.data import group_of
from cls_ray.consolidate.evaluate import greedy_accuracy
from cls_ray.consolidate.promotion import SleepServices
from cls_ray.consolidate.sleep import sleep_once
from cls_ray.eval.bench_consolidation import sessions_by_best_of_n
from cls_ray.eval.sandbox import sandbox_config
from cls_ray.eval.scratch import scratch_procedures
from cls_ray.ports import Scorer
from cls_ray.replay.sampling import balanced
from cls_ray.stack import Stack
from cls_ray.world.core import family_name

logger = logging.getLogger(__name__)


def arms_of(cfg: Config) -> dict[str, dict]:
    """The composition arms and their settings: `continue` trains the current adapter further,
    `base` a fresh adapter on the base each sleep, `full` every weight (the current checkpoint
    further, under ZeRO-3) at a tenth of the adapter's learning rate, the usual ratio between
    full fine-tuning's best rate and LoRA's."""
    c = cfg.consolidate
    return {
        "continue": {"consolidate.compose": "continue"},
        "base": {"consolidate.compose": "base"},
        "full": {
            "consolidate.compose": "continue",
            "consolidate.weights": "full",
            "consolidate.zero_stage": 3,
            "consolidate.lr": c.lr / 10,
        },
    }


ARMS = ("continue", "base", "full")
BASE = "base"
# A fresh copy starts at the base model: what earlier runs in the state directory learned is
# not carried into the arm.
FRESH = ("registry.json", "registry.json.lock", "skills.json", "retention_suite.jsonl", "adapters")


def summarize(matrix: Sequence[Sequence[float]], learned_row: Sequence[int]) -> dict:
    """`final_average`, `max_forgetting` and `backward_transfer` of an accuracy matrix (rows:
    before the first sleep, then after each; column j learned at row `learned_row[j]`)."""
    last = matrix[-1]
    forgetting, transfer = [], []
    for j, row in enumerate(learned_row):
        if row >= len(matrix):
            continue
        best = max(matrix[r][j] for r in range(row, len(matrix)))
        forgetting.append(best - last[j])
        if 0 < row < len(matrix) - 1:  # a skill a sleep taught, not the last one
            transfer.append(last[j] - matrix[row][j])
    return {
        "final_average": sum(last) / len(last),
        "max_forgetting": max(forgetting, default=0.0),
        "backward_transfer": sum(transfer) / len(transfer) if transfer else float("nan"),
    }


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r of paired figures (NaN with fewer than 3 pairs or no spread)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return float("nan")
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sx = math.sqrt(sum((x - mx) ** 2 for x, _ in pairs))
    sy = math.sqrt(sum((y - my) ** 2 for _, y in pairs))
    return sxy / (sx * sy) if sx > 1e-12 and sy > 1e-12 else float("nan")


@dataclass
class Unacked:
    """The sessions a sleep learns from: its own skill's and those of the refused sleeps before
    it. A refused sleep acknowledges nothing, so the buffer gives its sessions to the next sleep
    again (`_sleep_on_lease`), which learns and is measured on both skills."""

    skills: list[str] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)

    def add(self, skill: str, sessions: Sequence[dict]) -> None:
        self.skills.append(skill)
        self.sessions += sessions

    def settle(self, promoted: bool) -> list[str]:
        """The skills a sleep learned: all it held when promoted (then none are held), else none."""
        if not promoted:
            return []
        learned, self.skills, self.sessions = self.skills, [], []
        return learned


def arm_config(cfg: Config, arm: str) -> Config:
    """A copy of the state directory for one arm, at the base model, composing by `arm`."""
    c = sandbox_config(cfg, f"continual-{arm}", arms_of(cfg)[arm])
    for name in FRESH:
        path = c.state_path / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return c


def run_arm(cfg: Config, prm: Scorer, arm: str, log: Callable[[str], None]) -> dict:
    """K sleeps, one skill each, on a fresh copy composing by `arm`; the matrix and figures."""
    c = arm_config(cfg, arm)
    stack = Stack(c)
    task, world, cc = stack.task, stack.task.world, c.consolidate
    skills = world.skill_families()
    groups = {name: [family_name(f) for f in fams] for name, fams in skills}
    columns = [BASE, *groups]
    held_out = {BASE: task.questions("retention", per_group=cc.eval_per_family)}
    held_out |= {
        n: task.questions("eval", g, per_group=cc.eval_per_family) for n, g in groups.items()
    }
    opts = {**c.rgr_options(), "patterns": False, "check": task.check}

    def measure(s: Stack) -> list[float]:
        return [greedy_accuracy(s.engine, s.retriever, held_out[col], **opts) for col in columns]

    matrix = [measure(stack)]
    learned_row = [0, *range(1, len(skills) + 1)]  # the row each column was learned at
    log(
        f"  [{arm}] before: "
        + "  ".join(f"{k} {v:.2f}" for k, v in zip(columns, matrix[0], strict=True))
    )
    sleeps, replay, docs, leased = [], [], {}, Unacked()
    for k, (name, _) in enumerate(skills, start=1):
        train_qs = task.questions("train", groups[name], per_group=cc.new_per_family)
        sessions, more = sessions_by_best_of_n(stack, prm, train_qs, cc.sample_n, cc.seed + k)
        docs |= more
        retried = list(leased.skills)
        leased.add(name, sessions)
        sessions = list(leased.sessions)
        new_qs = [q for n in leased.skills for q in held_out[n]]
        group = group_of(task, replay)
        replayed = balanced(replay, lambda s, g=group: g[s["id"]], cc.replay_keep, cc.seed)
        batch = SleepBatch(sessions, docs, new_qs, held_out[BASE], replayed)
        try:
            with scratch_procedures(stack) as memory:
                services = SleepServices.local(c, memory)
                done = sleep_once(stack, batch, services, index=False, log=log, prm=prm)
                dreamt = done.pop("dream_sessions")
                dreamt = dreamt if done["promoted"] else []
                seen = {r["id"] for s in dreamt for st in s["steps"] for r in st["retrieved"]}
                docs |= memory.get_documents(sorted(seen - set(docs)))
        except ValueError as e:  # nothing passed the gate: this skill is not learned
            done = {"version": None, "promoted": False, "reason": str(e), "trained": {"pairs": 0}}
            dreamt = []
        for n in leased.settle(done["promoted"]):
            learned_row[columns.index(n)] = k
        if done["promoted"]:  # acknowledged: replayed by the next sleeps, with the dreams
            replay += sessions + dreamt
        else:
            learned_row[k] = len(skills) + 1  # not learned (yet): no forgetting to count
        stack.release_store()
        stack = Stack(c)  # the promoted version, or the same one when the gate refused
        row = measure(stack)
        matrix.append(row)
        # What the candidate itself cost the skills learned before (refused or not): the
        # forgetting its KL is to predict.
        b, a = done.get("skills_before") or {}, done.get("skills_after") or {}
        forgot = max((b[s] - a[s] for s in b if s in a), default=None)
        sleeps.append(
            {
                "skill": name,
                "retried": retried,  # skills whose refused sleeps' sessions this one took again
                "version": done["version"],
                "promoted": done["promoted"],
                "reason": done["reason"],
                "kl_new_skill": done.get("kl_new_skill"),
                "forgetting": forgot,
                "pairs": done["trained"]["pairs"],  # with the dreams the candidate kept
            }
        )
        log(
            f"  [{arm}] sleep {k} ({' + '.join([*retried, name])}): "
            f"{'promoted' if done['promoted'] else 'refused'} "
            + "  ".join(f"{col} {v:.2f}" for col, v in zip(columns, row, strict=True))
            + f"  (candidate's forgetting {forgot if forgot is not None else float('nan'):+.3f}, "
            f"KL {done.get('kl_new_skill') or float('nan'):.4f})"
        )
    stack.release_store()
    return {"arm": arm, "columns": columns, "matrix": matrix, "sleeps": sleeps} | summarize(
        matrix, learned_row
    )


def check_stream(cfg: Config, arms: Sequence[str]) -> None:
    """A clear error before any work when the config has no skill stream or an unknown arm."""
    if cfg.task.kind != "world" or len(cfg.world.held_back_sequence) < 2:
        raise ValueError(
            "bench continual needs a skill stream: the built-in world with "
            "world.held_back_sequence naming 2 or more relations (for example "
            "[rival, spouse, partner, twin]), and a model bootstrapped on that world"
        )
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown arm(s) {unknown or arms}: choose from {list(ARMS)}")


def bench_continual(
    cfg: Config, prm: Scorer, arms: Sequence[str] = ARMS, log: Callable[[str], None] = logger.info
) -> dict:
    """Every arm of `arms` through the whole sequence of skills; the first arm's figures at the
    top level (the default, `continue`), every arm's under `arms`."""
    check_stream(cfg, arms)
    seq = cfg.world.held_back_sequence
    results = []
    for arm in arms:
        log(f"bench continual: arm {arm} ({len(seq)} sleeps: {', '.join(seq)})")
        results.append(run_arm(cfg, prm, arm, log))
    every = [s for r in results for s in r["sleeps"]]
    first = results[0]
    return {
        "sequence": list(seq),
        "columns": first["columns"],
        "matrix": first["matrix"],
        "final_average": first["final_average"],
        "max_forgetting": first["max_forgetting"],
        "backward_transfer": first["backward_transfer"],
        "kl_predicts_forgetting_r": correlation(
            [s["kl_new_skill"] for s in every], [s["forgetting"] for s in every]
        ),
        "arms": results,
    }


def format_continual(result: dict) -> str:
    lines = []
    for r in result["arms"]:
        lines.append(f"arm {r['arm']}: rows = before, after sleep 1..{len(r['sleeps'])}")
        lines.append("            " + "".join(f"{c:>9}" for c in r["columns"]))
        for i, row in enumerate(r["matrix"]):
            label = "before" if i == 0 else f"sleep {i}"
            lines.append(f"  {label:<10}" + "".join(f"{v:9.2f}" for v in row))
        lines.append(
            f"  final average {r['final_average']:.3f}, max forgetting "
            f"{r['max_forgetting']:.3f}, backward transfer {r['backward_transfer']:+.3f}"
        )
    lines.append(
        f"KL on the new skill's prompts vs forgetting, over every sleep: r = "
        f"{result['kl_predicts_forgetting_r']:.2f}"
    )
    return "\n".join(lines)
