"""OpenAI's chat-completions shape around a session reply, without Ray."""

import asyncio
import json

import pytest
from fastapi import HTTPException

from cls_ray.serving.api import ChatRequest
from cls_ray.serving.openai import NO_ANSWER, Completion, model_list, question_of

REPLY = {
    "session_id": "s1",
    "question": "what is the mentor of Ann Lee ?",
    "answer": "Bo Ek",
    "model_version": "v3",
    "prm_step_scores": None,
    "r_tau": None,
    "steps": [{"text": "the mentor of Ann Lee is Bo Ek .", "citations": []}],
}


def test_the_question_is_the_last_user_message_with_text():
    req = ChatRequest(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "what is"}, {"text": "X ?"}]},
        ]
    )
    assert question_of(req) == "what is X ?"
    with pytest.raises(HTTPException) as e:
        question_of(ChatRequest(messages=[{"role": "user", "content": "  "}]))
    assert e.value.status_code == 422 and "messages" in e.value.detail


def test_a_completion_carries_the_answer_and_the_session():
    msg = Completion(REPLY).message()
    assert msg["object"] == "chat.completion" and msg["model"] == "v3"
    assert msg["choices"][0]["message"] == {"role": "assistant", "content": "Bo Ek"}
    assert msg["cls_ray"] == {"session_id": "s1", "model_version": "v3", "steps": REPLY["steps"]}
    assert msg["id"].startswith("chatcmpl-")
    assert Completion({**REPLY, "answer": None}).message()["choices"][0]["message"]["content"] == (
        NO_ANSWER
    )


def test_a_stream_is_server_sent_events_ending_with_done():
    async def collect():
        return [e async for e in Completion(REPLY).events()]

    events = asyncio.run(collect())
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Bo Ek"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["cls_ray"]["session_id"] == "s1"


def test_the_model_list_names_only_what_a_chat_request_may_name():
    """The version served and its alias; a registered version the replicas do not serve would
    answer 404, so it is not listed."""
    rows = [
        {"name": n, "created_at": 1.5, "status": st, "kind": k, "parent": p}
        for n, st, k, p in [("base", "promoted", "base", None), ("v1", "promoted", "lora", "base")]
    ]
    got = model_list(rows, "v1")
    assert got["object"] == "list"
    assert [(m["id"], m["current"], m["object"]) for m in got["data"]] == [
        ("v1", True, "model"),
        ("cls-ray", False, "model"),
    ]
    assert got["data"][1]["alias_of"] == "v1"
    assert got["data"][0]["parent"] == "base" and got["data"][0]["created"] == 1


def test_a_text_part_that_is_not_a_string_is_skipped_not_a_500():
    req = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": 5}, {"text": "Who?"}]}]
    )
    assert question_of(req) == "Who?"
    with pytest.raises(HTTPException) as e:
        question_of(ChatRequest(messages=[{"role": "user", "content": [{"text": 5}]}]))
    assert e.value.status_code == 422
