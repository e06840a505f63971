"""Turning the trajectories of one lock-step group into what the service stores and answers: the
PRM's pick of each question's best sample, the session records for the replay buffer, and the
reply a client gets."""

from __future__ import annotations

from collections.abc import Sequence

from cls_ray.prm.best_of_n import best_indices
from cls_ray.rgr import Trajectory
from cls_ray.session import Session


def pick_best(
    trajs: Sequence[Trajectory], scored: Sequence[dict], n: int
) -> tuple[list[Trajectory], list[dict]]:
    """Each question's `n` samples (consecutive) reduced to the one with the highest R(τ)."""
    best = best_indices([s["r_tau"] for s in scored], n)
    return [trajs[j] for j in best], [scored[j] for j in best]


def session_records(
    trajs: Sequence[Trajectory], scored: Sequence[dict | None], version: str, started: float
) -> list[Session]:
    """One session per trajectory, with its PRM scores where it was scored."""
    out = []
    for tr, sc in zip(trajs, scored, strict=True):
        tr.model_version = version
        session = Session.from_trajectory(tr, started_at=started)
        if sc is not None:
            session.prm_step_scores, session.r_tau = sc["scores"], sc["r_tau"]
            session.prm_version = sc["prm"]
        out.append(session)
    return out


def session_reply(tr: Trajectory, session: Session, version: str) -> dict:
    """The `/v1/rgr` reply: the answer, every step with its query, what it retrieved and the
    documents it cites, and the PRM's scores when they were asked for."""
    return {
        "session_id": session.id,
        "question": tr.question,
        "answer": tr.answer,
        "model_version": version,
        "prm_step_scores": session.prm_step_scores,
        "r_tau": session.r_tau,
        "steps": [
            {
                "text": s.text,
                "query": s.query,
                "retrieved": [{"id": d.id, "score": d.score} for d in s.retrieved],
                "citations": [{"id": d.id, "text": d.text} for d in s.retrieved if d.id in s.cited],
                "is_answer": s.is_answer,
            }
            for s in tr.steps
        ],
    }
