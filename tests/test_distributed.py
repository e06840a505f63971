"""The DeepSpeed side of `cls_ray.distributed`, in a real engine (one process over gloo): no
compiled op is built, and micro-batches make the optimizer step of the whole batch, at ZeRO-0
(what a single worker runs: configs/local.yaml's PRM) as at ZeRO-2, with the learning rate set
each step as `deepspeed_steps` sets it, and with torch's fused AdamW (`fused_adam`) as without."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import free_port

SCRIPT = r"""
import json, os, sys
import torch
import torch.distributed as dist
import deepspeed
from cls_ray.distributed import accumulate, deepspeed_config, without_shm_op

without_shm_op(deepspeed)
dist.init_process_group("gloo")
g = torch.Generator().manual_seed(1)
data = [(torch.randn(6, 4, generator=g), 10 * (i + 1) * torch.randn(6, 1, generator=g))
        for i in range(5)]
loss_fn = lambda engine, b: ((engine(b["x"]) - b["y"]) ** 2).mean()
out = {}
for stage, fused in ((0, False), (2, False), (0, True), (2, True)):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    ds = deepspeed_config(6, 0.1, stage, False, micro_batches=2, fused_adam=fused)
    engine, optimizer, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=ds)
    for i, (x, y) in enumerate(data):  # two micro-batches of unequal size: weights 4 and 2
        for group in optimizer.param_groups:  # the schedule, set as deepspeed_steps sets it
            group["lr"] = 0.1 / (i + 1)
        accumulate(engine, [[0, 1, 2, 3], [4, 5]], lambda r: {"x": x[r], "y": y[r]}, loss_fn)
    name = f"{stage}-fused" if fused else str(stage)
    out[name] = engine.module.weight.detach().flatten().tolist()
    out[f"{name}-optimizer"] = repr(engine.basic_optimizer.defaults.get("fused"))
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
for i, (x, y) in enumerate(data):  # the whole batch at once, as the micro-batches add up to
    for group in opt.param_groups:
        group["lr"] = 0.1 / (i + 1)
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
out["torch"] = model.weight.detach().flatten().tolist()
out["built"] = sorted(os.listdir(os.environ["TORCH_EXTENSIONS_DIR"]))
print(json.dumps(out))
"""


def test_deepspeed_builds_no_op_and_micro_batches_step_as_the_whole_batch(tmp_path):
    ext = tmp_path / "torch_extensions"
    ext.mkdir()
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": str(ext),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Nothing compiled: the shared-memory op (25 s on 2 cores) is not built, the step runs.
    assert out["built"] == []
    # `fused_adam` (the PRM's): torch's fused AdamW, the same update.
    assert out["0-fused-optimizer"] == out["2-fused-optimizer"] == "True"
    for stage in ("0", "2", "0-fused", "2-fused"):
        assert all(abs(a - b) < 1e-5 for a, b in zip(out[stage], out["torch"], strict=True))
