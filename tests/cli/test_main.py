import json

import pytest

from cls_ray.cli import main

pytestmark = pytest.mark.slow


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_ask_prints_steps_citations_and_answer(tiny_state, capsys):
    assert main(["ask", *tiny_state["args"]]) == 0
    out = capsys.readouterr().out
    assert "question: what is the" in out and "step 1:" in out and "cites w-" in out
    assert "answer:" in out
    assert main(["ask", "what is the mentor of Nobody Here ?", "--json", *tiny_state["args"]]) == 0
    obj = _last_json(capsys.readouterr().out)
    assert obj["question"] == "what is the mentor of Nobody Here ?"
    assert obj["steps"] and {"text", "query", "retrieved", "cited"} <= set(obj["steps"][0])


def test_bench_rgr_json_rows(tiny_state, capsys):
    assert main(["bench", "rgr", "--json", *tiny_state["args"]]) == 0
    out = capsys.readouterr().out
    res = _last_json(out)
    keys = {
        "mode",
        "hops",
        "family",
        "accuracy",
        "support_recall",
        "citation_precision",
        "latency_p50_s",
        "latency_p95_s",
        "retrieval_share",
    }
    assert res["rows"] and all(keys <= set(r) for r in res["rows"])
    assert {r["mode"] for r in res["rows"]} == {"rgr", "single", "none"}
    assert {r["hops"] for r in res["rows"]} == {1, 2, 3}
    assert {r["family"] for r in res["rows"]} == {"trained", "held_back"}
    none = [r for r in res["rows"] if r["mode"] == "none"]
    assert all(r["support_recall"] == 0 and r["retrieval_share"] == 0 for r in none)
    assert (tiny_state["dir"] / "reports" / "bench_rgr.png").stat().st_size > 1000


def test_reingest_adds_nothing(tiny_state, capsys):
    assert main(["ingest", "--world", "--no-ray", *tiny_state["args"]]) == 0
    out = capsys.readouterr().out
    assert "ingested 0 new documents" in out


def test_bad_config_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rgr:\n  top_k: -1\n")
    assert main(["ask", "hello", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: rgr.top_k" in err and "greater than or equal to 1" in err


def test_bench_retrieval_reports_every_query_form_and_mode(tiny_state, capsys):
    assert main(["bench", "retrieval", "--json", *tiny_state["args"]]) == 0
    res = _last_json(capsys.readouterr().out)
    assert {(r["query"], r["mode"]) for r in res["rows"]} == {
        (f, m) for f in ("question", "q+step", "state") for m in ("dense", "bm25", "hybrid")
    }
    assert all(0 <= r["recall"] <= 1 and r["ms_per_query"] > 0 for r in res["rows"])
    # The reasoning state finds later hops that the question alone cannot.
    state = next(r for r in res["rows"] if r["query"] == "state" and r["mode"] == "hybrid")
    alone = next(r for r in res["rows"] if r["query"] == "question" and r["mode"] == "hybrid")
    assert state["recall_hop2"] > alone["recall_hop2"]
