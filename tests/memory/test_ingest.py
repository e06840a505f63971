import json

import pytest

from cls_ray.config import load_config
from cls_ray.memory import MilvusStore
from cls_ray.memory.ingest import find_files, ingest_paths, parse_file


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    lines = [
        json.dumps({"id": "x1", "text": "the founder of Falcon Labs is Greta Novak ."}),
        "{not json",
        json.dumps({"text": "the mayor of Boston Falls is Hugo Keller ."}),
        json.dumps({"id": "x3"}),
        json.dumps(["a", "list"]),
        "",
    ]
    (d / "facts.jsonl").write_text("\n".join(lines) + "\n")
    (d / "notes.md").write_text(
        "# Notes\n\nFalcon Labs builds\nrockets.\n\n\nIt is based in Boston.\n"
    )
    (d / "skip.csv").write_text("ignored")
    return d


def test_parse_reports_file_and_line_and_goes_on(corpus):
    errors: list[str] = []
    docs = list(parse_file(corpus / "facts.jsonl", errors))
    assert [d["text"] for d in docs] == [
        "the founder of Falcon Labs is Greta Novak .",
        "the mayor of Boston Falls is Hugo Keller .",
    ]
    assert docs[0]["id"] == "x1" and docs[1]["id"].startswith("d-")
    assert len(errors) == 3
    assert errors[0].startswith(f"{corpus / 'facts.jsonl'}:2: not valid JSON")
    assert ":4: field 'text' missing" in errors[1]
    assert ":5: expected a JSON object" in errors[2]
    md = list(parse_file(corpus / "notes.md", errors))
    assert [d["text"] for d in md] == [
        "# Notes",
        "Falcon Labs builds rockets.",
        "It is based in Boston.",
    ]
    assert md[1]["source"] == "notes.md:3"


def _ingest(corpus, tmp_path, embedder, use_ray):
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}"])
    store = MilvusStore.from_config(cfg, embedder.dim)
    first = ingest_paths([corpus], cfg, store, progress=False, use_ray=use_ray)
    second = ingest_paths([corpus], cfg, store, progress=False, use_ray=use_ray)
    count = store.count()
    hits = store.search(embedder.embed(["who founded Falcon Labs"]), ["who founded Falcon Labs"], 1)
    store.close()
    return first, second, count, hits


def test_ingest_without_ray_is_idempotent(corpus, tmp_path, embedder):
    first, second, count, hits = _ingest(corpus, tmp_path, embedder, use_ray=False)
    assert first.files == 2 and first.written == 5 and len(first.errors) == 3
    assert second.written == 0 and second.skipped_existing == 5
    assert count == 5
    assert hits[0][0].id == "x1"


@pytest.mark.ray
def test_ingest_through_ray_data(corpus, tmp_path, embedder, ray_local):
    first, second, count, _ = _ingest(corpus, tmp_path, embedder, use_ray=True)
    assert first.written == 5 and second.written == 0 and count == 5


def test_missing_path_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_files(tmp_path / "nope")
    bad = tmp_path / "x.csv"
    bad.write_text("a")
    with pytest.raises(ValueError, match="unsupported file type"):
        find_files(bad)
