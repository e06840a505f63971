"""The Serve application over real HTTP on loopback, on a local Ray cluster."""

import json
import shutil

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_cfg, tiny_stack, ray_local):
    import requests
    from ray import serve

    from actors.deploy import deploy
    from cls_ray.config import load_config
    from tests.conftest import TINY_OVERRIDES, free_port

    state = tmp_path_factory.mktemp("serve-state")
    shutil.copytree(tiny_cfg.model_path, state / "models" / "base")
    port = free_port()
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"state_dir={state}",
            f"serve.port={port}",
            "serve.generator_autoscaling.max_replicas=1",
            "serve.app_name=cls-ray-test",
        ],
    )
    url = deploy(cfg)
    docs = [{"id": d.id, "text": d.text} for d in tiny_stack.world.documents]
    r = requests.post(f"{url}/v1/documents", json={"documents": docs}, timeout=120)
    assert r.status_code == 200, r.text
    yield {"url": url, "cfg": cfg, "world": tiny_stack.world}
    serve.delete("cls-ray-test")
    serve.shutdown()


def test_health_models_and_openapi(served):
    import requests

    assert requests.get(f"{served['url']}/healthz", timeout=30).json()["status"] == "ok"
    models = requests.get(f"{served['url']}/v1/models", timeout=30).json()
    assert models["data"][0]["id"] == "base"
    spec = requests.get(f"{served['url']}/openapi.json", timeout=30).json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/rgr" in spec["paths"]


def test_rgr_session_lands_in_the_buffer_with_feedback(served, ray_local):
    import requests

    q = served["world"].questions("heldout", per_family=1)[10].text
    r = requests.post(f"{served['url']}/v1/rgr", json={"question": q}, timeout=120)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["model_version"] == "base" and res["steps"]
    assert any(s["citations"] for s in res["steps"] if not s["is_answer"])
    buf = ray_local.get_actor("cls-replay-buffer", namespace="cls-ray")
    stored = ray_local.get(buf.get.remote(res["session_id"]))
    assert stored["model_version"] == "base" and stored["question"] == q
    first = stored["steps"][0]
    assert first["token_ids"] and len(first["token_ids"]) == len(first["logprobs"])
    fb = requests.post(
        f"{served['url']}/v1/sessions/{res['session_id']}/feedback",
        json={"rating": 1, "corrected_steps": ["the answer is X ."]},
        timeout=30,
    )
    assert fb.status_code == 200, fb.text
    stored = ray_local.get(buf.get.remote(res["session_id"]))
    assert stored["feedback"][0]["rating"] == 1.0


def test_openai_client_plain_and_streaming(served):
    from openai import OpenAI

    client = OpenAI(base_url=f"{served['url']}/v1", api_key="unused", max_retries=0)
    q = served["world"].questions("heldout", per_family=1)[3].text
    resp = client.chat.completions.create(model="base", messages=[{"role": "user", "content": q}])
    assert resp.choices[0].message.content
    extra = resp.model_extra["cls_ray"]
    assert extra["steps"] and extra["model_version"] == "base" and extra["session_id"]
    chunks = list(
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": q}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == resp.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


BAD = [
    ("POST", "/v1/rgr", b"{not json", 400),
    ("POST", "/v1/rgr", {"question": ""}, 422),
    ("POST", "/v1/rgr", {"question": "   "}, 422),
    ("POST", "/v1/rgr", {"question": 42}, 422),
    ("POST", "/v1/rgr", {}, 422),
    ("POST", "/v1/rgr", {"question": "q", "top_k": 0}, 422),
    ("POST", "/v1/rgr", {"question": "q", "mode": "sometimes"}, 422),
    ("POST", "/v1/rgr", {"question": "q", "surprise": 1}, 422),
    ("POST", "/v1/rgr", {"question": "x" * 5000}, 422),
    ("POST", "/v1/rgr", [1, 2, 3], 422),
    ("POST", "/v1/chat/completions", {"messages": []}, 422),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}]}, 422),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 422),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "v999", "messages": [{"role": "user", "content": "hi"}]},
        404,
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "temperature": -1},
        422,
    ),
    ("POST", "/v1/documents", {"documents": []}, 422),
    ("POST", "/v1/documents", {"documents": [{"text": ""}]}, 422),
    ("POST", "/v1/documents", {"documents": [{"id": "x" * 100, "text": "t"}]}, 422),
    ("POST", "/v1/sessions/nope/feedback", {"rating": 1}, 404),
    ("POST", "/v1/sessions/nope/feedback", {"rating": 7}, 422),
    ("POST", "/v1/sessions/nope/feedback", {}, 422),
    ("GET", "/admin/buffer", None, 403),
    ("POST", "/v1/rgr", b"x" * 2_000_000, 413),
]


def test_bad_requests_get_4xx_naming_the_problem_and_the_service_survives(served):
    import requests

    for method, path, body, status in BAD:
        kw = {"data": body} if isinstance(body, bytes) else {"json": body}
        if isinstance(body, bytes):
            kw["headers"] = {"content-type": "application/json"}
        r = requests.request(method, served["url"] + path, timeout=60, **kw)
        assert r.status_code == status, (method, path, str(body)[:60], r.status_code, r.text[:200])
        detail = json.dumps(r.json())
        assert detail and "detail" in detail
    ok = requests.post(
        f"{served['url']}/v1/rgr",
        json={"question": served["world"].questions("heldout", per_family=1)[0].text},
        timeout=120,
    )
    assert ok.status_code == 200


def _make_adapter(cfg, out):
    """A LoRA adapter on the served base with non-zero weights, so its answers differ."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cls_ray.model.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(cfg.model_path)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    lora.save_pretrained(out)
    return out


def test_hot_swap_under_load_fails_nothing_and_pins_versions(served, tmp_path):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from actors.deploy import promote, registry_for, rollback

    cfg = served["cfg"]
    v = registry_for(cfg).register(str(_make_adapter(cfg, tmp_path / "adapter")), "lora")
    qs = [q.text for q in served["world"].questions("heldout", per_family=1)]
    swap = {}
    results = []
    lock = threading.Lock()

    def one(i):
        t0 = time.time()
        r = requests.post(
            f"{served['url']}/v1/rgr", json={"question": qs[i % len(qs)]}, timeout=120
        )
        with lock:
            results.append((t0, r.status_code, r.json().get("model_version")))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        time.sleep(0.5)
        swap["start"] = time.time()
        promote(cfg, v.name)
        swap["end"] = time.time()
        futures += [pool.submit(one, i) for i in range(8, 24)]
        for f in futures:
            f.result()
    assert [s for _, s, _ in results if s != 200] == []
    for t0, _, version in results:
        if t0 < swap["start"]:
            assert version in ("base", v.name)
        elif t0 > swap["end"]:
            assert version == v.name
    after = [
        requests.post(f"{served['url']}/v1/rgr", json={"question": q}, timeout=120).json()
        for q in qs[:3]
    ]
    assert {a["model_version"] for a in after} == {v.name}
    models = requests.get(f"{served['url']}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models if m["current"]] == [v.name]
    assert rollback(cfg).name == "base"
    back = requests.post(f"{served['url']}/v1/rgr", json={"question": qs[0]}, timeout=120).json()
    assert back["model_version"] == "base"
