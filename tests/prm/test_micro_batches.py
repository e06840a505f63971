"""Micro-batches of like lengths (`prm.micro_batches`): the same optimizer step as the whole
batch, with less padding."""

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from cls_ray.distributed import accumulate, length_parts
from cls_ray.memory.embedder import default_encoder_path
from cls_ray.prm.labels import StepExample
from cls_ray.prm.model import StepPRM, collate, labelled, step_loss
from cls_ray.prm.train import encode_examples


class Engine:
    """What `accumulate` needs of a DeepSpeed engine, on a plain module: the forward, the
    backward (gradients add up, as DeepSpeed's do between accumulation boundaries), a step
    that leaves the gradients to be read."""

    device = torch.device("cpu")

    def __init__(self, module):
        self.module = module

    def __call__(self, *args):
        return self.module(*args)

    def backward(self, loss, scale_wrt_gas=True):
        assert scale_wrt_gas is False  # the weights already make the sum the batch's mean
        loss.backward()

    def step(self):
        pass


def rows():
    tok = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    examples = []
    for i in range(12):
        hops = 1 + i % 4
        steps = [f"the mentor of person {i} {h} is person {i + h} ." for h in range(hops)]
        labels = [None if (i + h) % 5 == 0 else float((i + h) % 3 != 0) for h in range(hops)]
        examples.append(
            StepExample(f"who is the mentor of person {i} ?", steps, labels, ["same"] * hops, "t")
        )
    return encode_examples(tok, examples, 512), tok.pad_token_id


def gradients(model, runs, pad):
    model.zero_grad()
    loss = accumulate(
        Engine(model),
        runs,
        lambda r: collate(r, pad),
        lambda eng, b: step_loss(eng(b["input_ids"], b["attention_mask"]), b["labels"]),
        weight=lambda b: int(labelled(b["labels"]).sum()),
    )
    return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_micro_batches_give_the_whole_batchs_gradient_with_less_padding():
    batch, pad = rows()
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model = StepPRM(BertModel(cfg)).eval()  # no dropout: both ways see the same network

    parts = length_parts(batch, 3, lambda r: len(r["input_ids"]))
    sizes = [len(p) for p in parts]
    assert len(sizes) == 3 and sum(sizes) == len(batch) and max(sizes) - min(sizes) <= 1
    lengths = [[len(r["input_ids"]) for r in p] for p in parts]
    assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:], strict=False))
    padded = sum(max(x) * len(x) for x in lengths)
    assert padded < max(len(r["input_ids"]) for r in batch) * len(batch)

    whole_loss, whole = gradients(model, [batch], pad)
    split_loss, split = gradients(model, parts, pad)
    assert abs(whole_loss - split_loss) < 1e-5
    assert len(whole) == len(split) > 0
    for a, b in zip(whole, split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # One part, or no lengths: the batch as it came.
    assert length_parts(batch, 1, len) == [batch] == length_parts(batch, 3, None)
