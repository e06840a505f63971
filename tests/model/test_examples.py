"""Training examples as tensors: left-padded, the loss on the target and its EOS only."""

import torch

from cls_ray.model.examples import encode_examples, left_pad
from cls_ray.model.tokenizer import build_world_tokenizer


def test_left_padding_aligns_every_row_at_the_end():
    ids, mask = left_pad([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_labels_score_only_the_target_and_its_eos():
    tok = build_world_tokenizer()
    prompt, target = "question: what is the mentor of Ann Lee ? step:", "the answer is Bo Ek ."
    batch = encode_examples(tok, [(prompt, target), (prompt, "the answer is X .")], 64)
    t_ids = tok(target, add_special_tokens=False)["input_ids"]
    labels = batch["labels"][0]
    scored = labels[labels != -100].tolist()
    assert scored == [*t_ids, tok.eos_token_id]
    row = batch["input_ids"][0][batch["attention_mask"][0] == 1].tolist()
    assert row[0] == tok.bos_token_id and row[-len(scored) :] == scored
    # A long example keeps its end (the target) when it is cut to `max_len`.
    cut = encode_examples(tok, [(prompt * 5, target)], 12)
    assert cut["input_ids"].shape[1] == 12
    assert torch.equal(cut["labels"][0][-len(scored) :], torch.tensor(scored))
