"""OpenAI's chat-completions shape around an RGR session: the question is the last user message;
the answer is the assistant message; steps, citations and the session id ride along in a
`cls_ray` field (and in the last chunk of a stream)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import HTTPException

from cls_ray.serving.api import ChatRequest

NO_ANSWER = "(no answer within the step limit)"


def question_of(req: ChatRequest) -> str:
    """The text of the last user message (a list of parts is joined); 422 when there is none."""
    for m in reversed(req.messages):
        if m.role == "user":
            content = m.content
            if isinstance(content, list):
                content = " ".join(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            if isinstance(content, str) and content.strip():
                return content.strip()
    raise HTTPException(422, "messages: no user message with text content")


def model_list(versions: list[dict], current: str) -> dict:
    """`GET /v1/models`: what a chat request may name: the version the replicas serve now and
    the alias `cls-ray` (always the current one). Other registered versions are not served,
    so they are not listed (`cls-ray versions` shows the registry)."""
    row = next((v for v in versions if v["name"] == current), None)
    created = int(row["created_at"]) if row else int(time.time())
    data = [
        {
            "id": name,
            "object": "model",
            "owned_by": "cls-ray",
            "created": created,
            "status": row["status"] if row else "promoted",
            "kind": row["kind"] if row else None,
            "parent": row["parent"] if row else None,
            "current": name == current,
            **({} if name == current else {"alias_of": current}),
        }
        for name in (current, "cls-ray")
    ]
    return {"object": "list", "data": data}


class Completion:
    """One chat completion of a session reply (`cls_ray.serving.sessions.session_reply`)."""

    def __init__(self, reply: dict, max_tokens: int | None = None):
        self.reply = reply
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.content = reply["answer"] if reply["answer"] is not None else NO_ANSWER
        self.tokens = reply.get("completion_tokens", 0)
        # No answer within the token budget: cut for length (OpenAI's finish reason).
        self.finish = "stop" if reply["answer"] is not None or not max_tokens else "length"
        self.extra = {k: reply[k] for k in ("session_id", "model_version", "steps")}

    def message(self) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.reply["model_version"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "finish_reason": self.finish,
                }
            ],
            "usage": {
                "prompt_tokens": 0,
                "completion_tokens": self.tokens,
                "total_tokens": self.tokens,
            },
            "cls_ray": self.extra,
        }

    def _chunk(self, delta: dict, finish: str | None = None, more: dict | None = None) -> str:
        obj = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.reply["model_version"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if more:
            obj["cls_ray"] = more
        return f"data: {json.dumps(obj)}\n\n"

    async def events(self) -> AsyncIterator[str]:
        """Server-sent events: the role, the content, the end with the extra field, [DONE]."""
        yield self._chunk({"role": "assistant", "content": ""})
        yield self._chunk({"content": self.content})
        yield self._chunk({}, self.finish, self.extra)
        yield "data: [DONE]\n\n"
