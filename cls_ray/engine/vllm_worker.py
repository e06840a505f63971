"""Runs inside vLLM's GPU workers (`LLM(worker_extension_cls=...)`), reached with
`LLM.collective_rpc`: a weight stream lands in the running model, or a checkpoint's files are
loaded into it in place. Every worker of a tensor-parallel engine receives the full tensors and
the model's own `load_weights` keeps its shard."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from vllm.distributed.parallel_state import get_world_group

from cls_ray.weight_sync import Channel, Rendezvous, TensorSpec, receive


class WeightSyncExtension:
    def cls_stream_in(
        self, rendezvous: dict, rank_offset: int, manifest: list, bucket_bytes: int
    ) -> str:
        """Joins the weight-sync group as rank `rank_offset` + this worker's rank; returns the
        hash of what arrived (see `cls_ray.weight_sync`)."""
        model = self.model_runner.model
        channel = Channel(
            Rendezvous(**rendezvous), rank_offset + get_world_group().rank, device=self.device
        )
        try:
            digest = receive(
                channel,
                [TensorSpec.from_json(r) for r in manifest],
                lambda named: model.load_weights(weights=named),
                bucket_bytes,
            )
        finally:
            channel.close()
        torch.cuda.synchronize()
        return digest

    def cls_load_checkpoint(self, path: str) -> int:
        """Loads the safetensors files of a checkpoint folder into the running model; returns
        how many tensors were read."""
        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors under {path}")
        count = 0

        def tensors():
            nonlocal count
            for f in files:
                with safe_open(str(f), framework="pt", device="cpu") as st:
                    for name in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                        count += 1
                        yield name, st.get_tensor(name)

        self.model_runner.model.load_weights(weights=tensors())
        torch.cuda.synchronize()
        return count
