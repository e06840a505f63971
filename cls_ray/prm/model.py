"""The PRM: a transformer encoder that reads a question and its steps (each with the document it
restates) and scores every step on the separator token that closes it.

    [CLS] question [SEP] step_1 evidence : doc_1 [SEP] step_2 evidence : doc_2 [SEP] ...

(`evidence : same` when a step restates its document word for word, `evidence : none` when no
document backs it.)

Only the closing separators carry labels; everything else is ignored by the loss. The default
encoder is the all-MiniLM-L6-v2 that ships with the project; `prm.encoder` takes any Hugging Face
encoder path. A trained PRM is a folder: the encoder and its tokenizer (`save_pretrained`), the
head (`head.pt`) and `prm.json`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from cls_ray.prm.aggregate import Aggregation, aggregate_step_scores
from cls_ray.prm.labels import step_evidence
from cls_ray.prm.store import latest_prm

MAX_QUESTION_TOKENS = 48
MAX_STEP_TOKENS = 32
MAX_EVIDENCE_TOKENS = 32


class StepPRM(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)

    @classmethod
    def from_encoder(cls, path: str | Path, num_layers: int | None = None) -> StepPRM:
        kwargs = {"num_hidden_layers": num_layers} if num_layers else {}
        return cls(AutoModel.from_pretrained(str(path), **kwargs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One logit per token (B, T); read them at the label positions."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1)


def encode(
    tokenizer,
    question: str,
    steps: Sequence[str],
    evidence: Sequence[str] | None = None,
    max_length: int = 512,
) -> tuple[list[int], list[int]]:
    """Token ids and, per step, the position of the separator that closes it. Steps that do not
    fit in `max_length` get no position (callers score them like the last step that fits)."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    def ids(text: str, cap: int) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"][:cap]

    out = [cls_id, *ids(question, MAX_QUESTION_TOKENS), sep_id]
    positions = []
    for i, step in enumerate(steps):
        ev = (evidence[i] if evidence else "") or "none"
        if " ".join(ev.split()) == " ".join(step.split()):
            ev = "same"  # the step restates its document word for word: say so, briefly
        piece = ids(step, MAX_STEP_TOKENS) + ids(f"evidence : {ev}", MAX_EVIDENCE_TOKENS)
        if len(out) + len(piece) + 1 > max_length:
            break
        out += piece + [sep_id]
        positions.append(len(out) - 1)
    return out, positions


def collate(rows: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads `input_ids`; `labels` is -1 everywhere except the labelled step positions."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -1.0)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        for pos, lab in zip(r["positions"], r["labels"], strict=False):
            if lab is not None:
                labels[i, pos] = float(lab)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """The positions `collate` gave a label (the rest are -1)."""
    return labels >= 0


def step_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on labelled positions (soft labels allowed): their mean."""
    keep = labelled(labels)
    if not keep.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])


class ProcessRewardModel:
    """A trained PRM, loaded by path: `score_steps`, `score_many`, `r_tau`."""

    def __init__(
        self,
        model: StepPRM,
        tokenizer,
        max_length: int = 512,
        aggregation: Aggregation = "min",
        batch_size: int = 32,
        path: str | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.aggregation: Aggregation = aggregation
        self.batch_size = batch_size
        self.path = path

    @classmethod
    def load(cls, path: str | Path, aggregation: Aggregation = "min") -> ProcessRewardModel:
        path = Path(path)
        meta_file = path / "prm.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} is not a trained PRM (no prm.json)")
        meta = json.loads(meta_file.read_text())
        model = StepPRM(AutoModel.from_pretrained(str(path / "encoder")))
        # Tensors only: a head.pt that pickles code is refused, not run.
        head = torch.load(path / "head.pt", map_location="cpu", weights_only=True)
        model.head.load_state_dict(head)
        tok = AutoTokenizer.from_pretrained(str(path / "encoder"))
        return cls(model, tok, meta.get("max_length", 512), aggregation, path=str(path))

    @torch.inference_mode()
    def score_many(
        self, items: Sequence[tuple[str, Sequence[str], Sequence[str] | None]]
    ) -> list[list[float]]:
        """Step scores for many `(question, steps, evidence)` at once (batched)."""
        encoded = [encode(self.tokenizer, q, s, e, self.max_length) for q, s, e in items]
        out: list[list[float]] = []
        pad = self.tokenizer.pad_token_id or 0
        for b in range(0, len(encoded), self.batch_size):
            chunk = encoded[b : b + self.batch_size]
            rows = [{"input_ids": ids, "positions": [], "labels": []} for ids, _ in chunk]
            batch = collate(rows, pad)
            probs = torch.sigmoid(self.model(batch["input_ids"], batch["attention_mask"]))
            for i, (_, positions) in enumerate(chunk):
                out.append([float(probs[i, p]) for p in positions])
        for scores, (_, steps, _) in zip(out, items, strict=True):
            while len(scores) < len(steps):  # steps past max_length: as the last that fit
                scores.append(scores[-1] if scores else 0.5)
        return out

    def score_steps(
        self,
        question: str,
        steps: Sequence[str],
        docs: Sequence[Sequence[str]] | Sequence[str] | None = None,
    ) -> list[float]:
        """The probability that each step is correct. `docs` are the documents the steps were
        written from: one list per step (what RGR retrieved for it) or one list for all."""
        return self.score_many([(question, steps, step_evidence(steps, docs))])[0]

    def r_tau(self, scores: Sequence[float]) -> float:
        return aggregate_step_scores(scores, self.aggregation)


def save_prm(model: StepPRM, tokenizer, path: str | Path, meta: dict) -> Path:
    """Writes the PRM folder next to its final place, then renames it in."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "encoder").mkdir(parents=True)
    model.encoder.save_pretrained(tmp / "encoder")
    tokenizer.save_pretrained(tmp / "encoder")
    torch.save(model.head.state_dict(), tmp / "head.pt")
    (tmp / "prm.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def load_prm(cfg) -> ProcessRewardModel:
    """The newest trained PRM (or `prm.path`); a clear error when there is none."""
    path = latest_prm(cfg)
    if path is None:
        raise FileNotFoundError("no trained PRM: run `cls-ray prm train` first")
    return ProcessRewardModel.load(path, cfg.prm.aggregation)
