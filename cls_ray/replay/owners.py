"""Who may comment on a session: a curator (or admin) on any; otherwise the key that asked it,
or whoever holds the session's feedback token (stored only as its SHA-256)."""

from __future__ import annotations

import hashlib
import hmac

from cls_ray.session import Feedback, Session


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def may_give_feedback(session: Session, fb: Feedback, token: str | None) -> bool:
    """A curator (or admin) may comment on any session; otherwise the feedback must come from
    the key that asked, or with the session's feedback token."""
    if fb.trusted:
        return True
    if fb.by is not None and session.owner == fb.by:
        return True
    digest = session.owner_token_sha256
    return bool(token and digest and hmac.compare_digest(token_digest(token), digest))
