"""Who may do what: keys stored hashed with roles, revoked at once, anonymous asking as a
switch, and a rate per caller answered with 429 and Retry-After."""

import json
import time

import pytest

from cls_ray.config import load_config
from cls_ray.serving.http import access_error
from cls_ray.serving.keys import Access, AccessDenied, KeyStore, RateLimiter


def test_keys_are_stored_hashed_and_revoked_at_once(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    rec, key = store.add("alice", "curator")
    assert key.startswith(f"clsr_{rec.id}_") and key not in (tmp_path / "keys.json").read_text()
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0  # owner-only
    seen = KeyStore(tmp_path / "keys.json")  # another process (the ingress) reading the file
    p = seen.authenticate(key)
    assert (p.key_id, p.name, p.role, p.trusted) == (rec.id, "alice", "curator", True)
    assert seen.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert seen.authenticate("clsr_nope_x") is None and seen.authenticate("garbage") is None
    time.sleep(0.01)
    store.revoke(rec.id)
    assert seen.authenticate(key) is None  # reread on change, no restart
    assert json.loads((tmp_path / "keys.json").read_text())[0]["revoked_at"]
    with pytest.raises(ValueError, match="role"):
        store.add("bob", "root")
    with pytest.raises(KeyError):
        store.revoke("nope")


def cfg_for(tmp_path, *more):
    return load_config(
        None,
        [f"state_dir={tmp_path}", "serve.admin_key_env=CLS_RAY_TEST_ENV_ADMIN", *more],
    )


def test_each_role_may_do_what_it_includes(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path)
    store = KeyStore(cfg.keys_path)
    keys = {role: store.add(role, role)[1] for role in ("user", "curator", "admin")}
    door = Access(cfg)
    allowed = {
        (who, needed): _ok(door, keys.get(who), needed)
        for who in ("anonymous", "user", "curator", "admin")
        for needed in ("user", "curator", "admin")
    }
    assert allowed == {
        ("anonymous", "user"): True,  # asking, where serve.auth.anonymous allows it
        ("anonymous", "curator"): False,
        ("anonymous", "admin"): False,
        ("user", "user"): True,
        ("user", "curator"): False,
        ("user", "admin"): False,
        ("curator", "user"): True,
        ("curator", "curator"): True,
        ("curator", "admin"): False,
        ("admin", "user"): True,
        ("admin", "curator"): True,
        ("admin", "admin"): True,
    }
    closed = Access(cfg_for(tmp_path, "serve.auth.anonymous=false"))
    with pytest.raises(AccessDenied) as e:
        closed.require(None, "user")
    assert e.value.status == 401 and "user role" in e.value.detail
    with pytest.raises(AccessDenied) as e:
        door.require(keys["user"], "curator")
    assert e.value.status == 403 and "curator" in e.value.detail
    with pytest.raises(AccessDenied) as e:
        door.require("clsr_0000_wrong", "user")
    assert e.value.status == 401 and access_error(e.value).status_code == 401
    monkeypatch.setenv("CLS_RAY_TEST_ENV_ADMIN", "operator-secret")
    assert door.require("operator-secret", "admin").role == "admin"


def _ok(door, key, needed) -> bool:
    try:
        door.require(key, needed)
        return True
    except AccessDenied:
        return False


def test_a_caller_over_its_rate_gets_429_with_retry_after(tmp_path):
    cfg = cfg_for(tmp_path, "serve.auth.rate_per_minute=60", "serve.auth.burst=3")
    _, key = KeyStore(cfg.keys_path).add("eager", "user")
    door = Access(cfg)
    for _ in range(3):
        door.require(key, "user")
    with pytest.raises(AccessDenied) as e:
        door.require(key, "user")
    http = access_error(e.value)
    assert http.status_code == 429 and http.headers["Retry-After"] == "1"
    door.require(None, "user", client="10.0.0.1")  # other callers have buckets of their own
    limiter = RateLimiter(per_minute=6000, burst=1)
    assert limiter.take("a") == 0 and limiter.take("a") > 0
    time.sleep(0.02)
    assert limiter.take("a") == 0  # refilled
