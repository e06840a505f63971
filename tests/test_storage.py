"""The storage abstraction passes the same tests on a local folder and on an S3-compatible
server on loopback (moto's server mode): the replay buffer's segments go through it."""

import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs
import pytest
import requests

from cls_ray.config import load_config
from cls_ray.consolidate.promotion import publish
from cls_ray.registry import registry_for
from cls_ray.replay import ReplayBuffer
from cls_ray.replay.data import read_leased
from cls_ray.serving.spec import app_spec
from cls_ray.storage import Storage, StorageError, materialize, mirror_reports
from tests.helpers import free_port, make_session


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with a bucket; the client reads its credentials and
    endpoint from the environment, as it would on a cluster."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # a busy machine starts it slowly (it was 10 s: too short)
    while True:
        try:
            requests.get(url, timeout=2)
            break
        except requests.RequestException:  # not listening yet, or listening but not answering
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not answer on its port within 60 s")
            time.sleep(0.2)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield from _with_bucket(pafs, port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _with_bucket(pafs, port):
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("cls-ray")
    yield f"s3://cls-ray/state?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Storage(tmp_path / "state")
    uri = request.getfixturevalue("s3_server")
    return Storage(uri).child(f"t{time.time_ns()}")  # a fresh prefix per test


def test_files_round_trip_and_overwrite_whole(store):
    store.write_text("reports/sleep.json", '{"a": 1}')
    store.write_bytes("blob.bin", bytes(range(256)))
    assert store.read_text("reports/sleep.json") == '{"a": 1}'
    assert store.read_bytes("blob.bin") == bytes(range(256))
    store.write_text("reports/sleep.json", '{"a": 2}')
    assert store.read_text("reports/sleep.json") == '{"a": 2}'
    assert store.exists("blob.bin") and not store.exists("nothing.json")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nothing.json")


def test_listing_and_deleting(store):
    for name in ("seg-00000002.parquet", "seg-00000001.parquet", "notes.txt"):
        store.write_text(f"segments/{name}", name)
    assert store.list("segments", ".parquet") == ["seg-00000001.parquet", "seg-00000002.parquet"]
    assert store.list("empty") == []
    store.delete("segments/notes.txt")
    store.delete("segments/never-there")
    assert store.list("segments") == ["seg-00000001.parquet", "seg-00000002.parquet"]
    store.delete("segments")
    assert store.list("segments") == []


def test_a_folder_goes_up_and_comes_back_byte_for_byte(store, tmp_path):
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (src / "sub" / "consolidation.json").write_text('{"train": {}}')
    uri = store.put_dir(src, "adapters/v3")
    again = Storage(uri).get_dir("", tmp_path / "back")
    for f in ("adapter_model.safetensors", "sub/consolidation.json"):
        assert (again / f).read_bytes() == (src / f).read_bytes()
    with pytest.raises(FileNotFoundError):
        store.get_dir("adapters/none", tmp_path / "none")


def test_the_replay_buffer_keeps_its_segments_in_the_storage(store, tmp_path):
    buf = ReplayBuffer(tmp_path / "wal", seal_every=3, segments=store.url("replay"))
    for i in range(7):
        buf.add(make_session(i))
    assert store.list("replay", ".parquet") == ["seg-00000000.parquet", "seg-00000001.parquet"]
    assert not list((tmp_path / "wal").glob("segments/*.parquet"))  # not on the local disk
    buf.close()
    again = ReplayBuffer(tmp_path / "wal", seal_every=3, segments=store.url("replay"))
    assert sorted(again.ids()) == [f"s{i:04d}" for i in range(7)]
    again.ack([f"s{i:04d}" for i in range(5)])
    assert again.compact(keep_replay=1)["dropped"] == 4
    again.close()
    back = ReplayBuffer(tmp_path / "wal", seal_every=3, segments=store.url("replay"))
    assert len(back.ids()) == 3 and back.stats()["pending"] == 2


@pytest.mark.ray
def test_ray_data_reads_leased_sessions_from_the_storage(store, tmp_path, ray_local):
    buf = ReplayBuffer(tmp_path / "wal", seal_every=2, segments=store.url("replay"))
    for i in range(5):
        buf.add(make_session(i))
    lease = buf.lease(4)
    assert [s["id"] for s in read_leased(lease)] == [f"s{i:04d}" for i in range(4)]


def test_a_uri_without_a_bucket_is_refused_naming_it():
    with pytest.raises(StorageError, match="s3://"):
        Storage("s3://")


def test_a_version_published_to_the_storage_is_copied_to_a_replica_once(store, tmp_path):
    """What `sleep` registers with `storage.uri` set, and what a generator replica loads."""
    out = tmp_path / "sft-123"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    (out / "consolidation.json").write_text('{"checksum": "abc"}')
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", f"storage.uri={store.uri}"])
    uri = publish(cfg, out)
    assert uri == cfg.artifacts.url("sft-123")
    cache = tmp_path / "cache"
    local = Path(materialize(uri, cache))
    assert (local / "adapter_model.safetensors").read_bytes() == (
        out / "adapter_model.safetensors"
    ).read_bytes()
    if store.local:
        assert local == Path(store.path("adapters/sft-123"))  # a folder is used in place
    else:
        assert local.parent == cache
        stamp = (local / "consolidation.json").stat().st_mtime_ns
        assert materialize(uri, cache) == str(local)  # copied once
        assert (local / "consolidation.json").stat().st_mtime_ns == stamp
    no_storage = load_config(None, [f"state_dir={tmp_path / 'state'}"])
    assert publish(no_storage, out) == str(out) and materialize(str(out), cache) == str(out)


def test_reports_are_mirrored_to_the_storage(store, tmp_path):
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", f"storage.uri={store.uri}"])
    assert mirror_reports(cfg) is None  # nothing written yet
    (cfg.state_path / "reports" / "demo").mkdir(parents=True)
    (cfg.state_path / "reports" / "sleep.json").write_text('{"promoted": true}')
    (cfg.state_path / "reports" / "demo" / "retention.png").write_bytes(b"\x89PNG...")
    mirror_reports(cfg)
    assert store.read_text("reports/sleep.json") == '{"promoted": true}'
    assert store.read_bytes("reports/demo/retention.png") == b"\x89PNG..."


@pytest.mark.parametrize("key", ["../escape", "adapters/../../escape", "/tmp/escape"])
def test_a_key_that_leaves_the_storage_root_is_refused_naming_it(store, tmp_path, key):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    for call in (
        lambda: store.write_text(key, "x"),
        lambda: store.read_bytes(key),
        lambda: store.exists(key),
        lambda: store.list(key),
        lambda: store.delete(key),
        lambda: store.child(key),
        lambda: store.url(key),
        lambda: store.put_dir(src, key),
        lambda: store.get_dir(key, tmp_path / "back"),
    ):
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            call()
    assert not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


def test_links_that_lead_out_of_the_root_or_the_destination_are_refused(tmp_path):
    store = Storage(tmp_path / "state")
    outside = tmp_path / "outside"
    outside.mkdir()
    (Path(store.root) / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="'link/x' resolves outside"):
        store.write_text("link/x", "x")
    store.write_text("adapters/v1/sub/weights", "w")
    back = tmp_path / "back"
    back.mkdir()
    (back / "sub").symlink_to(outside)  # a download must not follow it out
    with pytest.raises(ValueError, match="would be written outside"):
        store.get_dir("adapters/v1", back)
    assert list(outside.iterdir()) == []


def test_a_secret_in_storage_uri_stays_a_reference_where_it_is_stored(
    s3_server, tmp_path, monkeypatch
):
    """The registry, the Serve application's config and a pickled `Storage` hold `${VAR}`;
    the value is read where the URI is opened."""
    endpoint = parse_qs(urlsplit(s3_server).query)["endpoint_override"][0]
    monkeypatch.setenv("CLS_TEST_S3_ENDPOINT", endpoint)
    ref = s3_server.replace(endpoint, "${CLS_TEST_S3_ENDPOINT}").replace("/state?", "/secret?")
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", f"storage.uri={ref}"])
    out = tmp_path / "sft-7"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(os.urandom(512))
    v = registry_for(cfg).register(publish(cfg, out), "lora")
    stored = (cfg.state_path / "registry.json").read_text()
    assert "${CLS_TEST_S3_ENDPOINT}" in stored and endpoint not in stored
    spec = json.dumps(app_spec(cfg, v))
    assert "${CLS_TEST_S3_ENDPOINT}" in spec and endpoint not in spec
    assert endpoint not in pickle.dumps(cfg.artifacts).decode("latin-1")
    local = Path(materialize(v.artifact_uri, tmp_path / "cache"))  # read where it is used
    assert (local / "adapter_model.safetensors").read_bytes() == (
        out / "adapter_model.safetensors"
    ).read_bytes()
    monkeypatch.delenv("CLS_TEST_S3_ENDPOINT")
    with pytest.raises(StorageError, match=r"reads \$\{CLS_TEST_S3_ENDPOINT\}"):
        Storage(v.artifact_uri)
