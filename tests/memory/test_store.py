import numpy as np
import pytest

from cls_ray.config import load_config
from cls_ray.memory import MilvusStore
from tests.helpers import free_port, start_milvus_server

DOCS = [
    ("a1", "the employer of Alice Porter is Falcon Labs ."),
    ("a2", "the employer of Alice Parker is Falcon Works ."),
    ("a3", "the mentor of Alice Porter is Bruno Silva ."),
    ("a4", "the founder of Falcon Labs is Greta Novak ."),
    ("a5", "the birthplace of Greta Novak is Boston Falls ."),
    ("a6", "the mayor of Boston Falls is Hugo Keller ."),
]


def _fill(store, embedder):
    ids, texts = zip(*DOCS, strict=True)
    return store.upsert(list(ids), list(texts), embedder.embed(list(texts)))


@pytest.fixture
def lite(tmp_path, embedder):
    store = MilvusStore(str(tmp_path / "m.db"), embedder.dim)
    _fill(store, embedder)
    yield store
    store.close()


def test_embedder_rows_are_unit_norm(embedder):
    v = embedder.embed(["a", "the founder of Falcon Labs", "b c d"])
    assert v.shape == (3, embedder.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with pytest.raises(TypeError):
        embedder.embed("not a list")


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_finds_the_fact_in_every_mode(lite, embedder, mode):
    queries = ["Falcon Labs what founder", "what is the mentor of Alice Porter ?"]
    hits = lite.search(embedder.embed(queries), queries, k=2, mode=mode)
    assert [h[0].id for h in hits] == ["a4", "a3"]
    assert hits[0][0].text == DOCS[3][1]


def test_upsert_twice_does_not_duplicate(lite, embedder):
    assert lite.count() == len(DOCS)
    _fill(lite, embedder)
    assert lite.count() == len(DOCS)
    assert lite.get(["a1", "zz"]) == {"a1": DOCS[0][1]}


def test_exclude_skips_cited_documents(lite, embedder):
    q = ["what is the employer of Alice Porter ?"]
    first = lite.search(embedder.embed(q), q, k=1)[0][0].id
    again = lite.search(embedder.embed(q), q, k=3, exclude=[{first}])[0]
    assert first not in {h.id for h in again} and len(again) == 3


def test_episodic_collection_is_separate(lite, embedder):
    v = embedder.embed(["pattern: the founder of X is Y"])
    lite.upsert(["p1"], ["pattern: the founder of X is Y"], v, kind="episodic")
    assert lite.count("episodic") == 1 and lite.count() == len(DOCS)
    with pytest.raises(ValueError, match="unknown collection"):
        lite.name("nope")


def test_reopening_the_file_keeps_documents(tmp_path, embedder):
    path = str(tmp_path / "m.db")
    s = MilvusStore(path, embedder.dim)
    _fill(s, embedder)
    s.close()
    s2 = MilvusStore(path, embedder.dim)
    assert s2.count() == len(DOCS)
    s2.close()


def test_server_uri_from_config(milvus_server, embedder):
    cfg = load_config(None, [f"store.uri={milvus_server}", "store.collection_prefix=srv"])
    store = MilvusStore.from_config(cfg, embedder.dim)
    assert store.uri == milvus_server
    _fill(store, embedder)
    q = ["what is the mayor of Boston Falls ?"]
    assert store.search(embedder.embed(q), q, k=1, mode="hybrid")[0][0].id == "a6"
    store.drop()
    store.close()


def test_store_reconnects_after_the_server_restarts(tmp_path, embedder):
    port, data = free_port(), tmp_path / "srv"
    proc = start_milvus_server(data, port)
    store = MilvusStore(f"http://127.0.0.1:{port}", embedder.dim, prefix="restart")
    _fill(store, embedder)
    store.flush()
    proc.terminate()
    proc.wait(30)
    proc = start_milvus_server(data, port)  # same data, same port: a server restart
    try:
        q = ["what is the mayor of Boston Falls ?"]
        assert store.search(embedder.embed(q), q, k=1)[0][0].id == "a6"
        assert store.count() == len(DOCS)
    finally:
        store.close()
        proc.terminate()
        proc.wait(30)


def test_texts_are_kept_to_the_varchar_limit_in_bytes_not_characters(tmp_path, embedder):
    """Milvus counts a VARCHAR in UTF-8 bytes: a text of `max_text_length` two-byte characters
    is cut on a character boundary, not refused; an id over 64 bytes is refused naming it."""
    store = MilvusStore(str(tmp_path / "m.db"), embedder.dim, max_text_length=64)
    text = "é" * 64  # 64 characters, 128 bytes
    assert store.upsert(["e1"], [text], embedder.embed([text])) == 1
    kept = store.get(["e1"])["e1"]
    assert kept == "é" * 32 and len(kept.encode()) == 64
    long_id = "ü" * 40  # 40 characters, 80 bytes
    with pytest.raises(ValueError, match="longer than 64 bytes"):
        store.upsert([long_id], ["x"], embedder.embed(["x"]))
    store.close()
