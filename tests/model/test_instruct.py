"""A user's instruct model on a user's files task: a byte-level BPE tokenizer with its own chat
template and a tiny random Llama, through ask, serving (a session with feedback), a PRM from
Monte Carlo labels, sleep in the chat format, the gate, and promotion."""

import pytest
import requests
from ray import serve

from actors.ray_cluster import take_down
from actors.runtime import up
from cls_ray.cli.main import main
from cls_ray.cli.parser import make_parser, resolve_config
from cls_ray.model.examples import encode_examples
from cls_ray.registry import registry_for
from cls_ray.serving.keys import KeyStore
from cls_ray.stack import Stack
from cls_ray.steps import step_format
from cls_ray.task import WorldTask, export_task
from tests.cli.test_main import _last_json
from tests.helpers import (
    OPEN_GATE,
    TINY_OVERRIDES,
    TINY_PRM_OVERRIDES,
    free_port,
    make_instruct_model,
    set_args,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def instruct(tiny_world, tmp_path):
    task_dir = tmp_path / "task"
    export_task(WorldTask(tiny_world), task_dir)
    texts = [d.text for d in tiny_world.documents]
    texts += [q.question for q in WorldTask(tiny_world).questions("train")]
    model = make_instruct_model(tmp_path / "instruct", texts)
    overrides = [
        *TINY_OVERRIDES,
        *TINY_PRM_OVERRIDES,
        f"state_dir={tmp_path / 'state'}",
        "task.kind=files",
        f"task.path={task_dir}",
        f"model.path={model}",
        "model.template=chat",
        "engine.max_new_tokens=12",
        "rgr.max_steps=3",
        "store.collection_prefix=instruct",
        f"serve.port={free_port()}",
        "serve.app_name=cls-ray-instruct",
        "serve.generator.autoscaling.max_replicas=1",
        "prm.questions_per_family=3",  # Monte Carlo rollouts of a random model: the most time
        "prm.mc_rollouts=2",
        "consolidate.steps=10",
        "consolidate.batch_size=4",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        *OPEN_GATE,
    ]
    return set_args(overrides)


def test_chat_training_data_carries_one_bos(instruct):
    cfg = resolve_config(make_parser().parse_args(["ask", *instruct]))
    fmt = step_format(cfg)
    prompt = fmt.render("what is the employer of x ?", ["a document ."], [])
    tok = fmt.tokenizer
    batch = encode_examples(tok, [(prompt, "the answer is y .")], 1024)
    ids = batch["input_ids"][0][batch["attention_mask"][0] == 1].tolist()
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert not fmt.grounded_default and cfg.grounded is False  # chat: free generation


def test_an_instruct_model_runs_the_whole_loop_on_a_files_task(instruct, ray_local, capsys):
    args = instruct
    cfg = resolve_config(make_parser().parse_args(["sleep", *args]))
    task = Stack(cfg).task
    serve.shutdown()  # a Serve left by an earlier test keeps its own HTTP port
    url = up(cfg)  # the retriever replica owns the Milvus Lite file while the stack is up
    try:
        docs = list(task.documents())
        _, curator = KeyStore(cfg.keys_path).add("test curator", "curator")
        r = requests.post(
            f"{url}/v1/documents",
            json={"documents": docs},
            headers={"X-API-Key": curator},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        for q in task.questions("train", task.new_groups, per_group=2):
            r = requests.post(f"{url}/v1/rgr", json={"question": q.question}, timeout=120)
            assert r.status_code == 200, r.text
            sid, token = r.json()["session_id"], r.json()["feedback_token"]
        fb = requests.post(
            f"{url}/v1/sessions/{sid}/feedback",
            json={"rating": 1.0},
            headers={"X-Session-Token": token},
            timeout=60,
        )
        assert fb.status_code == 200, fb.text
    finally:
        take_down(cfg)
        serve.shutdown()
    assert main(["ask", "--local", "--json", *args]) == 0
    assert _last_json(capsys.readouterr().out)["model_version"] == "base"

    assert main(["prm", "train", "--json", *args]) == 0
    trained = _last_json(capsys.readouterr().out)
    assert (
        trained["data"]["sources"] == ["mc"] and trained["data"]["human_trajectories"] == 0
    )  # a user's rating: evidence
    assert trained["data"]["labelled_steps"] > trained["data"]["wrong_steps"] > 0
    assert main(["prm", "eval", "--json", *args]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["labels"] == "Monte Carlo rollouts" and 0 <= res["step_f1"] <= 1
    assert {r["family"] for r in res["best_of_n"]} == {"trained", "held_back"}
    assert main(["prm", "train", *args, "--set", "prm.label_sources=[verifier]"]) == 1
    assert "has none; use mc" in capsys.readouterr().err

    assert main(["sleep", "--json", *args]) == 0
    done = _last_json(capsys.readouterr().out)
    assert done["train"]["loss"] > 0 and done["data"]["new_pairs"] > 0
    version = done["version"]
    if not done["promoted"]:  # a random model answers no retention question: no evidence
        assert "no retention evidence" in done["reason"]
        assert main(["promote", version, *args]) == 0  # an operator may still promote it
    assert registry_for(cfg).current().name == version
    assert main(["ask", "--local", "--json", *args]) == 0
    assert _last_json(capsys.readouterr().out)["model_version"] == version
