"""The ingress's HTTP concerns without Ray: a body limit before parsing, errors that name the
field, admin keys. Driven through FastAPI's test client on the real middleware and handlers."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cls_ray.serving.api import DocumentsRequest, RGRRequest
from cls_ray.serving.http import BodyLimit, install


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setattr(BodyLimit, "max_body_bytes", 2048)
    api = install(FastAPI())

    @api.post("/rgr")
    async def rgr(body: RGRRequest) -> dict:
        return {"question": body.question}

    @api.post("/documents")
    async def documents(body: DocumentsRequest) -> dict:
        return {"written": len(body.documents)}

    return TestClient(api)


def test_a_valid_body_passes(client):
    r = client.post("/rgr", json={"question": "what is the mentor of Ann Lee ?"})
    assert r.status_code == 200 and r.json() == {"question": "what is the mentor of Ann Lee ?"}


def test_a_body_over_the_limit_is_refused_before_parsing(client):
    r = client.post("/rgr", json={"question": "x" * 4000})
    assert r.status_code == 413 and r.json() == {"detail": "body larger than 2048 bytes"}

    def chunks():  # no Content-Length: the limit holds while the body is read
        for _ in range(8):
            yield b"x" * 1024

    r = client.post("/rgr", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("path", "body", "status", "names"),
    [
        ("/rgr", b"{not json", 400, "malformed JSON"),
        ("/rgr", {"question": ""}, 422, "question"),
        ("/rgr", {"question": "  "}, 422, "question is empty"),
        ("/rgr", {"question": "q", "top_k": 0}, 422, "top_k"),
        ("/rgr", {"question": "q", "surprise": 1}, 422, "surprise"),
        ("/rgr", {}, 422, "question"),
        ("/documents", {"documents": [{"id": "x" * 100, "text": "t"}]}, 422, "documents.0.id"),
    ],
)
def test_bad_bodies_get_an_error_that_names_the_field(client, path, body, status, names):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert names in r.json()["detail"]
