"""Turning the trajectories of one lock-step group into what the service stores and answers: the
PRM's pick of each question's best sample, the session records for the replay buffer, and the
reply a client gets."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fastapi import HTTPException

from cls_ray.prm.best_of_n import best_indices
from cls_ray.replay.owners import token_digest
from cls_ray.rgr import Trajectory
from cls_ray.serving.api import RGRRequest
from cls_ray.serving.limits import request_cost
from cls_ray.session import Session


def session_request(
    cfg,
    body: RGRRequest,
    owner: str | None,
    scorer: bool = False,
    max_tokens: int | None = None,
) -> dict:
    """What the ingress batches for one `/v1/rgr` (or chat) request, with its `cost`; 422
    naming the field for what the service cannot or will not do."""
    s = cfg.serve
    if len(body.question) > s.max_question_chars:
        raise HTTPException(422, f"question: longer than {s.max_question_chars} characters")
    if (body.best_of > 1 or body.score) and not scorer:
        raise HTTPException(
            422, "best_of/score: no PRM is deployed (run `cls-ray prm train`, then redeploy)"
        )
    if max_tokens is not None and max_tokens > s.limits.max_tokens:
        raise HTTPException(422, f"max_tokens: at most {s.limits.max_tokens}")
    top_k, max_steps = body.top_k or cfg.rgr.top_k, body.max_steps or cfg.rgr.max_steps
    cost = request_cost(body.best_of, max_steps, top_k if body.mode != "none" else 1)
    if cost > s.limits.max_request_cost:
        raise HTTPException(
            422,
            f"best_of x max_steps x top_k: {body.best_of} x {max_steps} x {top_k} = {cost} "
            f"exceeds {s.limits.max_request_cost}",
        )
    return {
        "question": body.question,
        "mode": body.mode,
        "top_k": top_k,
        "max_steps": max_steps,
        "max_tokens": max_tokens,
        "cost": cost,
        # Best-of-N samples; greedy decoding would give N copies of one trajectory.
        "temperature": body.temperature or (1.0 if body.best_of > 1 else 0.0),
        "best_of": body.best_of,
        "score": body.score,
        "owner": owner,
    }


def pick_best(
    trajs: Sequence[Trajectory], scored: Sequence[dict], n: int
) -> tuple[list[Trajectory], list[dict]]:
    """Each question's `n` samples (consecutive) reduced to the one with the highest R(τ)."""
    best = best_indices([s["r_tau"] for s in scored], n)
    return [trajs[j] for j in best], [scored[j] for j in best]


def session_records(
    trajs: Sequence[Trajectory],
    scored: Sequence[dict | None],
    version: str,
    started: float,
    owners: Sequence[str | None] | None = None,
) -> list[Session]:
    """One session per trajectory, with its PRM scores where it was scored and the key that
    asked it (`owners`; None: anonymous)."""
    out = []
    for i, (tr, sc) in enumerate(zip(trajs, scored, strict=True)):
        tr.model_version = version
        session = Session.from_trajectory(tr, started_at=started)
        session.owner = owners[i] if owners else None
        if sc is not None:
            session.prm_step_scores, session.r_tau = sc["scores"], sc["r_tau"]
            session.prm_version = sc["prm"]
        out.append(session)
    return out


def issue_tokens(sessions: Sequence[Session]) -> list[str]:
    """A fresh feedback token per session: the reply carries it, the record keeps its hash, and
    only its holder (or the key that asked, or a curator) may give the session feedback."""
    tokens = [secrets.token_urlsafe(18) for _ in sessions]
    for s, t in zip(sessions, tokens, strict=True):
        s.owner_token_sha256 = token_digest(t)
    return tokens


def session_reply(tr: Trajectory, session: Session, version: str, token: str = "") -> dict:
    """The `/v1/rgr` reply: the answer, every step with its query, what it retrieved and the
    documents it cites, the PRM's scores when they were asked for, and the session's feedback
    token (send it as `X-Session-Token` with feedback)."""
    return {
        "session_id": session.id,
        "feedback_token": token,
        "completion_tokens": sum(len(s.token_ids or ()) for s in tr.steps),
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
