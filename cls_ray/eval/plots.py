"""Plots of benchmark reports (PNG), for results people would rather see than read."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file backend: plots are written, never shown

import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

logger = logging.getLogger(__name__)


def save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_bench_rgr(result: dict, path: Path) -> Path:
    """Accuracy and support recall by hops, one line per mode, trained families solid and
    held-back families dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"rgr": "tab:blue", "single": "tab:orange", "none": "tab:gray"}
    for ax, metric in zip(axes, ("accuracy", "support_recall"), strict=True):
        for (mode, fam), style in (
            ((m, f), "-" if f == "trained" else "--")
            for m in colors
            for f in ("trained", "held_back")
        ):
            rows = sorted(
                (r for r in result["rows"] if r["mode"] == mode and r["family"] == fam),
                key=lambda r: r["hops"],
            )
            if rows:
                ax.plot(
                    [r["hops"] for r in rows],
                    [float("nan") if r[metric] is None else r[metric] for r in rows],
                    style,
                    marker="o",
                    color=colors[mode],
                    label=f"{mode} ({fam})",
                )
        ax.set_xlabel("hops")
        ax.set_xticks(sorted({r["hops"] for r in result["rows"]}))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("RGR vs single-shot RAG vs no retrieval (held-out questions)")
    return save(fig, path, dpi=100)


def plot_bench_serve(result: dict, path: Path) -> Path:
    """Sessions/s and retriever queries/s, batched against unbatched."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    pairs = [
        ("sessions / s (HTTP, RGR)", result["throughput_rps"], result["unbatched_throughput_rps"]),
        ("retriever queries / s", result["retrieval_qps"], result["unbatched_retrieval_qps"]),
    ]
    for ax, (title, on, off) in zip(axes, pairs, strict=True):
        ax.bar(["batched", "batch size 1"], [on, off], color=["tab:blue", "tab:gray"])
        ax.set_title(f"{title}: {on / off:.2f}x")
    fig.suptitle(
        f"{result['sessions']} concurrent sessions; hot swap {result['swap_seconds']:.2f} s; "
        f"{result['failed']} of {result['requests']} failed"
    )
    return save(fig, path)


def plot_prm_eval(result: dict, path: Path) -> Path:
    """Best-of-N accuracy against N: greedy, majority vote and the PRM's pick, per family."""
    groups = sorted({r["family"] for r in result["best_of_n"]}, reverse=True)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
    styles = {
        "greedy": ("tab:gray", "--"),
        "majority": ("tab:orange", "-"),
        "prm": ("tab:blue", "-"),
    }
    for ax, group in zip(axes[0], groups, strict=True):
        rows = sorted(
            (r for r in result["best_of_n"] if r["family"] == group), key=lambda r: r["n"]
        )
        for how, (color, ls) in styles.items():
            ax.plot(
                [r["n"] for r in rows],
                [r[how] for r in rows],
                ls,
                marker="o",
                color=color,
                label=how,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N samples")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{group} families")
        ax.legend()
    fig.suptitle(
        f"PRM: step F1 {result['step_f1']:.3f}, first error {result['first_error_accuracy']:.3f}, "
        f"AUROC R(τ) {result['auroc_tau']:.3f}"
    )
    return save(fig, path)


def plot_bench_autoscale(result: dict, path: Path) -> Path:
    """The generator's running replicas over time, the load's window shaded."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = [row["t_s"] for row in result["timeline"]]
    n = [row["replicas"] for row in result["timeline"]]
    ax.axvspan(result["load_began_s"], result["load_ended_s"], color="tab:orange", alpha=0.15,
               label=f"load: {result['clients']} sessions at a time")  # fmt: skip
    ax.step(t, n, where="post", color="tab:blue", label="generator replicas (running)")
    total = [row["replicas"] + row.get("starting", 0) for row in result["timeline"]]
    ax.step(t, total, where="post", color="tab:blue", ls="--", alpha=0.6,
            label="running + starting (the controller's decision)")  # fmt: skip
    ax.axhline(result["max_replicas"], color="tab:gray", ls=":", label="max_replicas")
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    ax.set_ylim(0, result["max_replicas"] + 0.5)
    ax.set_title(
        f"autoscaling: {result['ok']}/{result['requests']} requests ok, {result['failed']} failed"
    )
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, path)


def plot_bench_continual(result: dict, path: Path) -> Path:
    """One heat-map per composition arm: accuracy after each sleep (rows) on every skill
    (columns), the value in each cell."""
    arms = result["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms) + 0.8, 3.8), squeeze=False)
    for ax, r in zip(axes[0], arms, strict=True):
        m = r["matrix"]
        ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if v < 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(len(r["columns"])), r["columns"], rotation=30, fontsize=8)
        ax.set_yticks(range(len(m)), ["before"] + [f"sleep {i}" for i in range(1, len(m))])
        ax.set_title(
            f"{r['arm']}: final {r['final_average']:.2f}, forgetting {r['max_forgetting']:.2f}",
            fontsize=9,
        )
    return save(fig, path)
