"""Training examples as tensors: (prompt, target) pairs, left-padded, labels on the target only."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cls_ray.steps import compact_prompt
from cls_ray.world.episodes import Episode


def left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) ids and their attention mask: generation continues every row at the
    same last position."""
    n = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, x in enumerate(seqs):
        if x:
            ids[i, n - len(x) :] = torch.tensor(x)
            mask[i, n - len(x) :] = 1
    return ids, mask


def encode_examples(
    tokenizer, examples: list[tuple[str, str]], max_len: int
) -> dict[str, torch.Tensor]:
    """(prompt, target) pairs -> left-padded input ids, attention mask and labels that score
    only the target and its EOS."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, labels = [], []
    p_ids = tokenizer([p for p, _ in examples], add_special_tokens=False)["input_ids"]
    t_ids = tokenizer([t for _, t in examples], add_special_tokens=False)["input_ids"]
    for p, t in zip(p_ids, t_ids, strict=True):
        # one BOS: a chat template writes its own at the start of the prompt
        head = [bos] if bos is not None and (not p or p[0] != bos) else []
        ids = head + p + t + [eos]
        lab = [-100] * (len(ids) - len(t) - 1) + t + [eos]
        rows.append(ids[-max_len:])
        labels.append(lab[-max_len:])
    input_ids, attn = left_pad(rows, pad)
    lab_t, _ = left_pad(labels, -100)
    return {"input_ids": input_ids, "attention_mask": attn, "labels": lab_t}


def episode_pair(ep: Episode) -> tuple[str, str]:
    """A world episode as a (compact prompt, next step) pair."""
    return compact_prompt(ep.question, ep.docs, ep.steps), ep.target
