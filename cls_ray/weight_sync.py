"""Streaming a full-weight version into running engines over a collective group.

One sender (rank 0) holds the version's weights; every serving engine worker joins as a
receiver (ranks 1..N) and the weights cross once, over NCCL between GPUs or gloo on CPU, in
buckets of same-dtype tensors packed into one flat buffer per broadcast. Sender and receivers
plan the buckets from the same manifest (name, dtype, shape in name order), so nothing but the
tensors travels on the group.

Either side can hash the stream as it goes, with the definition of `weights_checksum` (every
tensor by name, in name order, as float32), so a hash of a checkpoint's state dict equals the
checksum its trainer recorded. In cls-ray the sender checksums its state before anything moves,
an HF receiver checksums the whole model it loaded the tensors into, and a vLLM worker (whose
parameters are named and fused its own way) hashes what arrived.

The group is stateless: it is built from its own TCP store, next to whatever default group the
process has (a Ray Train worker's, a vLLM worker's). Backends: `gloo` (CPU tensors), `nccl`
(torch's, CUDA tensors) and `pynccl` (vLLM's own communicator, which vLLM's workers use; the
sender must use it too when the receivers are vLLM engines).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ray
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

logger = logging.getLogger(__name__)

Backend = str  # "gloo" | "nccl" | "pynccl"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # torch dtype name without the module: "bfloat16"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_json(self) -> list:
        return [self.name, self.dtype, list(self.shape)]

    @classmethod
    def from_json(cls, row: Sequence) -> TensorSpec:
        name, dtype, shape = row
        return cls(str(name), str(dtype), tuple(int(d) for d in shape))


def manifest_of(state: dict[str, torch.Tensor]) -> list[TensorSpec]:
    """The specs of a state dict, in name order (the order both sides stream in)."""
    return [
        TensorSpec(name, str(t.dtype).removeprefix("torch."), tuple(t.shape))
        for name, t in sorted(state.items())
    ]


class StreamHash:
    """SHA-256 over (name, float32 bytes) in the order tensors are fed: fed a state dict in
    name order, it is `weights_checksum` of the model."""

    def __init__(self):
        self._h = hashlib.sha256()

    def update(self, name: str, t: torch.Tensor) -> None:
        self._h.update(name.encode())
        self._h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def plan_buckets(manifest: Sequence[TensorSpec], bucket_bytes: int) -> list[list[int]]:
    """Consecutive runs of same-dtype tensors up to `bucket_bytes` each (a bigger tensor is a
    bucket of its own): one broadcast per bucket."""
    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, spec in enumerate(manifest):
        nbytes = spec.numel * spec.torch_dtype.itemsize
        if not buckets or spec.dtype != dtype or size + nbytes > bucket_bytes:
            buckets.append([])
            size, dtype = 0, spec.dtype
        buckets[-1].append(i)
        size += nbytes
    return buckets


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host if host else "", 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_address(rdv: Rendezvous) -> str:
    """The address this rank's gloo pairs bind: loopback when the group meets on loopback (one
    machine), else this node's address as Ray knows it."""
    if is_loopback(rdv.host):
        return "127.0.0.1"

    return ray.util.get_node_ip_address() if ray.is_initialized() else socket.gethostname()


@dataclass(frozen=True)
class Rendezvous:
    """Where the group meets: the sender's TCP store at `host:port`, `world` ranks."""

    host: str
    port: int
    world: int
    backend: Backend = "gloo"
    timeout_s: float = 600.0  # a transfer
    name: str = "cls-ray-weights"
    hosted: bool = False  # the store is already served (`host_store`): every rank is a client
    join_timeout_s: float = 60.0  # every rank in the group (a replica gone since: all fail)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def host_store(host: str, timeout_s: float = 600.0):
    """The group's TCP store, served on a port the system picks before anyone is told where to
    meet (no window in which another process takes the port). The ranks join with
    `Rendezvous(host, store.port, world, hosted=True)`; the store lives as long as the object."""
    return dist.TCPStore(
        host,
        0,
        None,
        is_master=True,
        timeout=datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


class Channel:
    """One rank of a stateless broadcast group (`store`: the hosted store, for the rank in the
    process that serves it)."""

    def __init__(self, rdv: Rendezvous, rank: int, device: str | torch.device = "cpu", store=None):
        self.rdv, self.rank, self.device = rdv, rank, torch.device(device)
        timeout = datetime.timedelta(seconds=rdv.timeout_s)
        join = datetime.timedelta(seconds=min(rdv.join_timeout_s, rdv.timeout_s))
        if rdv.backend == "pynccl":
            # vLLM is the optional `gpu` extra; only its own workers ask for this backend.
            from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
            from vllm.distributed.utils import StatelessProcessGroup

            pg = StatelessProcessGroup.create(
                host=rdv.host, port=rdv.port, rank=rank, world_size=rdv.world
            )
            self._pynccl = PyNcclCommunicator(pg, device=self.device)
            self._pg = None
            return

        if store is None:
            store = dist.TCPStore(
                rdv.host,
                rdv.port,
                rdv.world,
                is_master=rank == 0 and not rdv.hosted,
                timeout=join,
            )
        prefixed = dist.PrefixStore(rdv.name, store)
        self._store = store  # the master's server lives as long as this object
        if rdv.backend == "gloo":
            opts = dist.ProcessGroupGloo._Options()
            # On one machine the group stays on loopback; across nodes each rank binds the
            # address its node resolves to.
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname=_local_address(rdv))]
            opts._timeout = join  # gloo's rendezvous waits this long for the other ranks
            self._pg = dist.ProcessGroupGloo(prefixed, rank, rdv.world, opts)
            self._pg._set_default_timeout(timeout)
        elif rdv.backend == "nccl":
            self._pg = dist.ProcessGroupNCCL(prefixed, rank, rdv.world)
        else:
            raise ValueError(f"unknown weight-sync backend {rdv.backend!r}")

    def broadcast(self, t: torch.Tensor) -> None:
        """Rank 0's `t` into every other rank's `t` (same shape and dtype on all)."""
        if self._pg is None:
            self._pynccl.broadcast(t, src=0, stream=torch.cuda.current_stream())
            return

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self._pg.broadcast([t], opts).wait()

    def close(self) -> None:
        self._pg = None
        self._pynccl = None
        self._store = None


def send(
    channel: Channel,
    manifest: Sequence[TensorSpec],
    tensor: Callable[[str], torch.Tensor],
    bucket_bytes: int,
    progress: Callable[[int, int], None] | None = None,
    hash: bool = True,
) -> str | None:
    """Broadcasts the tensors of `manifest` (`tensor(name)` gives each) in buckets; returns the
    stream hash (None with `hash=False`, for a sender that checksummed its state already)."""
    h = StreamHash() if hash else None
    buckets = plan_buckets(manifest, bucket_bytes)
    sent = 0
    for bi, idx in enumerate(buckets):
        parts = []
        for i in idx:
            spec = manifest[i]
            t = tensor(spec.name)
            if tuple(t.shape) != spec.shape or t.dtype != spec.torch_dtype:
                raise ValueError(f"{spec.name}: {tuple(t.shape)} {t.dtype} is not {spec}")
            if h:
                h.update(spec.name, t)
            parts.append(t.reshape(-1))
        flat = (torch.cat(parts) if len(parts) > 1 else parts[0]).to(channel.device).contiguous()
        channel.broadcast(flat)
        sent += flat.numel() * flat.element_size()
        if progress:
            progress(bi + 1, len(buckets))
    logger.info(
        "streamed %d tensors, %.1f MB in %d buckets", len(manifest), sent / 1e6, len(buckets)
    )
    return h.hexdigest() if h else None


def receive(
    channel: Channel,
    manifest: Sequence[TensorSpec],
    sink: Callable[[list[tuple[str, torch.Tensor]]], None],
    bucket_bytes: int,
    hash: bool = True,
) -> str | None:
    """Receives what `send` broadcasts; hands each bucket's tensors to `sink` (views of the
    received buffer, valid during the call); returns the stream hash (None with `hash=False`,
    for a receiver that checksums the whole model it loaded them into)."""
    h = StreamHash() if hash else None
    for idx in plan_buckets(manifest, bucket_bytes):
        specs = [manifest[i] for i in idx]
        flat = torch.empty(
            sum(s.numel for s in specs), dtype=specs[0].torch_dtype, device=channel.device
        )
        channel.broadcast(flat)
        named, off = [], 0
        for s in specs:
            t = flat[off : off + s.numel].view(s.shape)
            off += s.numel
            if h:
                h.update(s.name, t)
            named.append((s.name, t))
        sink(named)
    return h.hexdigest() if h else None


def copy_into(model: torch.nn.Module) -> Callable[[list[tuple[str, torch.Tensor]]], None]:
    """A `receive` sink that copies each tensor into the model's state-dict entry of that
    name (tied weights arrive under each of their names and land in the same storage)."""
    state = model.state_dict()

    @torch.no_grad()
    def sink(named: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in named:
            if name not in state:
                raise KeyError(f"the streamed weights name {name}, which this model lacks")
            state[name].copy_(t)

    return sink


class CheckpointSource:
    """A full checkpoint's state dict, loaded once, as the sender streams it: `manifest` and
    `tensor(name)`. Loading the model (not reading its files) gives exactly the state dict the
    trainer hashed, tied weights under each of their names included."""

    def __init__(self, path: str, device: str = "cpu"):
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
        self.state = self.model.state_dict()
        self.manifest = manifest_of(self.state)

    def tensor(self, name: str) -> torch.Tensor:
        return self.state[name]
