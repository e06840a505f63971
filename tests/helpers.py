"""Helpers the tests share (imported by tests; `conftest.py` holds only fixtures)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from cls_ray.memory.procedures import Pattern
from cls_ray.model.loading import load_model_and_tokenizer, save_full_checkpoint
from cls_ray.replay.buffer import ReplayBuffer
from cls_ray.rgr import run_rgr
from cls_ray.session import Session, SessionStep

ROOT = Path(__file__).resolve().parents[1]

# The test app's admin key (set by conftest before any Ray worker starts, so replicas inherit it).
ADMIN_KEY_ENV = "CLS_RAY_TEST_ADMIN_KEY"

# A tiny embedded default: a world at 2% scale, a 2-layer model trained for 150 steps.
TINY_OVERRIDES = [
    "world.scale=0.02",
    "model.arch.hidden_size=64",
    "model.arch.num_layers=2",
    "model.arch.num_heads=4",
    "model.arch.intermediate_size=128",
    "model.arch.max_position=160",
    "model.bootstrap.steps=150",
    "model.bootstrap.batch_size=32",
    "model.bootstrap.warmup=20",
    "model.bootstrap.lr=0.003",
    "engine.batch_size=16",
    "bench.per_family=2",
    "store.collection_prefix=tiny",
    "consolidate.dream_rounds=0",  # dreams are tested on their own (test_sleep)
    "consolidate.retention_episodes=256",  # the path, not the precision of a real gate
]

TINY_PRM_OVERRIDES = [
    "prm.num_layers=1",
    "prm.freeze_embeddings=true",  # 3x faster steps for a 1-layer PRM
    "prm.questions_per_family=6",
    "prm.samples_per_question=1",
    "prm.corruptions_per_question=3",
    "prm.steps=60",
    "prm.batch_size=8",
    "prm.lr=0.0003",
    "prm.warmup=6",
    "prm.log_every=10",
    "prm.cpus_per_worker=0.5",
    "prm.eval_per_family=2",
    "prm.eval_samples_per_question=1",
    "prm.best_of_n=[1,4]",
    "prm.best_of_n_per_family=1",
]

# A sleep whose gate lets every candidate through: the tiny PRM is weak, and the gate itself is
# tested on its own (tests/consolidate/test_promotion.py); these check the path.
OPEN_GATE = [
    "consolidate.min_r_tau=0.0",
    "consolidate.min_step_score=0.0",
    "consolidate.retention_tolerance=1.0",
    # tiny models answer few questions right: the reference would leave nothing to train on
    "consolidate.reference_gate=false",
]


def set_args(overrides: list[str]) -> list[str]:
    """`--set` arguments of the CLI for `overrides`."""
    return [x for o in overrides for x in ("--set", o)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_milvus_server(data: Path, port: int) -> subprocess.Popen:
    """A real Milvus Lite gRPC server on loopback (`milvus-lite server`)."""
    exe = Path(sys.executable).with_name("milvus-lite")
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail("milvus-lite server exited at start")
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("milvus-lite server did not open its port in 60 s")
    return proc


def make_full_checkpoint(
    model_path, out, seed: int = 1, checksum: str | None = None, extra_layer: bool = False
) -> str:
    """A full checkpoint of the model at `model_path` with perturbed weights and the checksum a
    trainer records next to it, which it returns (`checksum` overrides it: a checkpoint whose
    files do not match; `extra_layer`: a deeper model, another architecture on the same
    tokenizer)."""
    torch.manual_seed(seed)
    model, tok = load_model_and_tokenizer(model_path)
    if extra_layer:
        model.config.num_hidden_layers += 1
        model = AutoModelForCausalLM.from_config(model.config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_full_checkpoint(model, out, tok, {"checksum": checksum} if checksum else None)


def make_session(i: int, version: str = "v1") -> Session:
    """A small two-step session with token ids and behaviour log-probs."""
    return Session(
        id=f"s{i:04d}",
        question=f"what is the mentor of Person {i} ?",
        steps=[
            SessionStep(
                text=f"the mentor of Person {i} is Other {i} .",
                query="q",
                token_ids=[5, 6, 7],
                logprobs=[-0.1, -0.2, -0.3],
            ),
            SessionStep(text=f"the answer is Other {i} .", is_answer=True),
        ],
        answer=f"Other {i}",
        model_version=version,
    )


def buffer_sessions(stack, cfg, questions, **rgr) -> list:
    """RGR sessions of the base model on `questions`, stored in `cfg`'s replay buffer (what the
    serving stack would have written); returns their trajectories."""
    trajs = run_rgr(
        [getattr(q, "question", None) or q.text for q in questions],  # a task's QA or the world's
        stack.engine,
        stack.retriever,
        **{**cfg.rgr_options(), **rgr},
    )
    buf = ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments)
    for tr in trajs:
        tr.model_version = "base"
        buf.add(Session.from_trajectory(tr))
    buf.close()
    return trajs


# A procedure of the held-back family: the rival of the mentor of a person.
PROCEDURE = Pattern(
    "what is the rival of the mentor of {person_1} ?",
    (
        "the mentor of {person_1} is {person_2} .",
        "the rival of {person_2} is {person_3} .",
        "the answer is {person_3} .",
    ),
)


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
    "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_instruct_model(path: Path, texts: list[str], vocab: int = 1500) -> Path:
    """An instruct model as users bring one: a byte-level BPE tokenizer trained with the
    `tokenizers` library on `texts`, a Jinja chat template that writes its own BOS, and a tiny
    random Llama; saved with `save_pretrained` under `path`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
