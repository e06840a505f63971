"""The replay buffer's sealed segments as a Ray Dataset.

A sleep reads the sessions it leased (`ReplayBuffer.lease`) from the Parquet segments with Ray
Data rather than through the process that owns the buffer: the bulk of a session (its steps,
retrieved documents and log-probs) travels from storage to the reader, and the buffer's owner
sends only ids and what arrived after sealing. On a cluster the segments live on storage every
node reads; the same code reads a local folder.

The segments are read by `SegmentDatasource`, one read task per segment that keeps only the
wanted ids, rather than by `ray.data.read_parquet`: its file listing and sampling stages ask a
whole CPU per task, which a cluster whose serving replicas hold all but a fraction of a CPU never
grants (a sleep next to the application on a small machine waited forever).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from cls_ray.session import Session
from cls_ray.storage import is_remote, read_table

READ_CPUS = 0.25


class SegmentDatasource(Datasource):
    """Session records (`id`, `record` JSON) of replay-buffer segments; only `ids` if given."""

    def __init__(self, segments: list[str], ids: list[str] | None = None):
        super().__init__()
        self.segments = list(segments)
        self.ids = None if ids is None else frozenset(ids)

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(_size(p) or 0 for p in self.segments) or None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        def reader(uri: str, ids):
            def read():
                table = read_table(uri, columns=["id", "record"])
                if ids is not None:
                    table = table.filter(pc.is_in(table["id"], value_set=_array(ids)))
                yield table

            return read

        return [
            ReadTask(
                reader(p, self.ids),
                BlockMetadata(
                    num_rows=None,
                    size_bytes=_size(p),
                    input_files=[p],
                    exec_stats=None,
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for p in self.segments
        ]


def _size(uri: str) -> int | None:
    """A local segment's size (a remote one is not asked: one request per file)."""
    if is_remote(uri):
        return None
    return os.path.getsize(uri) if os.path.exists(uri) else None


def _array(ids):
    return pa.array(sorted(ids), type=pa.string())


def sessions_dataset(segments: list[str], ids: list[str] | None = None):
    """A `ray.data.Dataset` of session records from `segments`, only `ids` when given."""
    return ray.data.read_datasource(
        SegmentDatasource(segments, ids), ray_remote_args={"num_cpus": READ_CPUS}
    )


def read_leased(lease: dict) -> list[dict]:
    """The leased sessions as dicts, in lease order, with their late feedback and scores. A
    session written to two segments (a compaction cut short) is read once."""
    ids = list(lease["ids"])
    if not ids:
        return []
    rows = sessions_dataset(lease["segments"], ids).take_all()
    found = {r["id"]: json.loads(r["record"]) for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise RuntimeError(f"{len(missing)} leased session(s) in no segment, e.g. {missing[0]}")
    out = []
    for i in ids:
        s = found[i]
        s.update(lease["late"].get(i, {}))
        out.append(Session.model_validate(s).model_dump())
    return out
