"""The replay buffer (hippocampus): finished sessions, kept durably.

Layout under its folder:
- `wal.jsonl`: one framed record per added session (`cls_ray.replay.wal`), appended and fsynced
  before `add` returns, so an acknowledged session survives a crash of the process or of the
  machine's power, and a failed or torn write is detected and cut, never glued to the next;
- `segments/seg-NNNNNNNN.parquet`: sealed segments (written whole: a temporary name, fsynced,
  then renamed, or one object-store upload; the WAL is truncated only after that), readable by
  Ray Data. They may live elsewhere, in any storage `cls_ray.storage` opens (`s3://...`): the
  WAL stays on the owner's disk, where an append can be fsynced;
- `acks.jsonl`: ids consumers acknowledged, appended and fsynced; never handed out again;
- `.lock`: held by the one process that writes here (a second writer is refused).

Adding is idempotent by session id, so a producer may retry an add whose answer it did not see.
Consumers `take` a batch (leased, not yet consumed) and `ack` it; a lease that is not acked in
time, or that a restart forgot, is handed out again. Feedback and PRM scores are appended to the
WAL as their own records and join their session on read; the next seal writes the sessions they
changed again (a later segment's copy wins), so the WAL holds only what came after its last seal.

Sealing is not on the producer's path: `add` only appends; the owner seals from a background
thread (`ReplayBufferActor`) or `maybe_seal` after adding, and a seal that fails (storage down)
is logged and reported in `stats` while adds go on into the WAL.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cls_ray.replay.owners import may_give_feedback
from cls_ray.replay.sampling import balanced
from cls_ray.replay.wal import FolderLock, Log
from cls_ray.session import Feedback, Session
from cls_ray.storage import Storage, read_table

logger = logging.getLogger(__name__)


def _locked(method):
    """Runs under the buffer's lock: the owner's sealing thread shares its state."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run


def feedback_in_files(cfg) -> list[dict]:
    """Sessions with user feedback in a config's buffer files (none when it has none), for a
    process that does not share them with a running buffer actor."""
    if not cfg.replay_path.exists():
        return []
    buf = ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments, readonly=True)
    return buf.with_feedback()


class ReplayBuffer:
    def __init__(
        self,
        root: str | Path,
        seal_every: int = 256,
        lease_seconds: float = 300.0,
        segments: str | None = None,
        readonly: bool = False,
        background_seal: bool = False,
    ):
        """`root`: the local folder of the WAL and the acks (the owner's disk, fsynced);
        `segments`: where sealed segments go, a folder or a storage URI (`s3://...`; see
        `cls_ray.storage`), by default `root/segments`. A writer takes the folder's lock
        (`FolderLocked` while another process holds it); `readonly` reads without it and
        changes nothing on disk. `background_seal`: the owner calls `maybe_seal` from its own
        thread (`ReplayBufferActor`), so `add` never waits for a seal."""
        self.root = Path(root)
        self.readonly = readonly
        if not readonly:
            self.root.mkdir(parents=True, exist_ok=True)
        self._folder_lock = None if readonly else FolderLock(self.root, "replay buffer")
        self._lock = threading.RLock()
        self._seal_lock = threading.Lock()  # one seal or compaction at a time
        self.store = Storage(segments or self.root / "segments")
        self.wal = self.root / "wal.jsonl"
        self.acks_file = self.root / "acks.jsonl"
        self.log = Log(self.wal, readonly)
        self.acks_log = Log(self.acks_file, readonly)
        self.seal_every = seal_every
        self.background_seal = background_seal
        self.lease_seconds = lease_seconds
        self.sessions: dict[str, Session] = {}  # every session, sealed or not, in arrival order
        self.in_wal: list[str] = []  # ids not yet sealed
        self.changed: set[str] = set()  # sealed sessions with feedback or scores since
        self.acked: set[str] = set()
        self.leases: dict[str, tuple[float, str]] = {}  # id -> (lease expiry, holder)
        self.segments = 0
        self.seal_error: dict | None = None  # the last failed seal, until one succeeds
        self._recover()

    def close(self) -> None:
        """Releases the folder to another writer (a crashed process releases it anyway)."""
        if self._folder_lock is not None:
            self._folder_lock.release()

    # -- recovery --------------------------------------------------------------------------
    def _recover(self) -> None:
        if self.store.local and not self.readonly:  # a seal that crashed before its rename
            for tmp in Path(self.store.root).glob("*.tmp*"):
                tmp.unlink()
        for name in self._segment_names():  # in order: a later copy of a session wins
            self.segments = max(self.segments, int(name[len("seg-") :].split(".")[0]) + 1)
            for s in self._read(name):
                self.sessions[s.id] = s
        pending_feedback: list[tuple[str, Feedback]] = []
        pending_scores: list[dict] = []
        for rec in self.log.read():
            if rec["op"] == "add":
                s = Session.model_validate(rec["session"])
                if s.id not in self.sessions:
                    self.sessions[s.id] = s
                    self.in_wal.append(s.id)
            elif rec["op"] == "feedback":
                pending_feedback.append((rec["id"], Feedback.model_validate(rec["feedback"])))
            elif rec["op"] == "scores":
                pending_scores.append(rec)
        for rec in pending_scores:
            if rec["id"] in self.sessions:
                self._apply_scores(rec)
                self._mark_changed(rec["id"])
        for sid, fb in pending_feedback:
            if sid in self.sessions and fb not in self.sessions[sid].feedback:
                self.sessions[sid].feedback.append(fb)
                self._mark_changed(sid)
        for rec in self.acks_log.read():
            self.acked.update(rec["ids"] if isinstance(rec, dict) else rec)
        self.acked &= set(self.sessions)  # ids a compaction dropped before rewriting the acks
        logger.info(
            "replay buffer at %s: %d sessions (%d unsealed), %d acked, %d segments",
            self.root,
            len(self.sessions),
            len(self.in_wal),
            len(self.acked),
            self.segments,
        )

    # -- producers -------------------------------------------------------------------------
    def add(self, session: Session | dict, consumed: bool = False) -> str:
        """Stores a session durably and returns its id; adding the same id again is a no-op.
        `consumed`: stored as already learned from (a promoted sleep's dreams), for replay
        only. Unless the owner seals in the background, a seal follows when `seal_every`
        sessions wait; its failure does not fail the add (see `maybe_seal`)."""
        sid = self._add(session, consumed)
        if not self.background_seal:
            self.maybe_seal()
        return sid

    @_locked
    def _add(self, session: Session | dict, consumed: bool = False) -> str:
        s = session if isinstance(session, Session) else Session.model_validate(session)
        if s.id in self.sessions:
            return s.id
        self.log.append([{"op": "add", "session": s.model_dump()}])
        self.sessions[s.id] = s
        self.in_wal.append(s.id)
        if consumed:  # under the same lock: no consumer can lease it in between
            self.acks_log.append([{"ids": [s.id]}])
            self.acked.add(s.id)
        return s.id

    def needs_seal(self) -> bool:
        return len(self.in_wal) >= self.seal_every

    def maybe_seal(self, force: bool = False) -> str | None:
        """Seals if `seal_every` sessions wait (or `force`); a failure is logged and kept in
        `stats()["seal_error"]`, never raised: the sessions are safe in the WAL meanwhile."""
        if not (force or self.needs_seal()):
            return None
        try:
            return self.seal()
        except Exception as e:  # noqa: BLE001 - storage down: the WAL keeps everything
            logger.exception("replay buffer %s: sealing failed", self.root)
            self.seal_error = {"error": f"{type(e).__name__}: {e}", "at": time.time()}
            return None

    @_locked
    def add_feedback(
        self, session_id: str, feedback: Feedback | dict, token: str | None = None
    ) -> None:
        """Stores feedback on a session from its owner (the key that asked it, or whoever
        holds the session's feedback token) or from a curator; anyone else gets
        PermissionError."""
        if session_id not in self.sessions:
            raise KeyError(session_id)
        fb = feedback if isinstance(feedback, Feedback) else Feedback.model_validate(feedback)
        if not may_give_feedback(self.sessions[session_id], fb, token):
            raise PermissionError(
                f"session {session_id}: feedback only from the key that asked it, the holder of "
                "its feedback token, or a curator"
            )
        self.log.append([{"op": "feedback", "id": session_id, "feedback": fb.model_dump()}])
        self.sessions[session_id].feedback.append(fb)
        self._mark_changed(session_id)

    def _mark_changed(self, session_id: str) -> None:
        if session_id not in self.in_wal:  # sealed: the next seal writes it again
            self.changed.add(session_id)

    @_locked
    def set_scores(
        self, session_id: str, step_scores: list[float], r_tau: float, prm: str | None = None
    ) -> None:
        """The PRM's step scores and R(τ) for a stored session (durable; the latest wins)."""
        if session_id not in self.sessions:
            raise KeyError(session_id)
        rec = {
            "op": "scores",
            "id": session_id,
            "scores": list(step_scores),
            "r_tau": r_tau,
            "prm": prm,
        }
        self.log.append([rec])
        self._apply_scores(rec)
        self._mark_changed(session_id)

    def _apply_scores(self, rec: dict) -> None:
        s = self.sessions[rec["id"]]
        s.prm_step_scores = list(rec["scores"])
        s.r_tau = rec["r_tau"]
        s.prm_version = rec.get("prm")

    # -- segments --------------------------------------------------------------------------
    def seal(self) -> str | None:
        """Writes the unsealed sessions, and the sealed ones that got feedback or scores since,
        as one Parquet segment, then drops from the WAL what the segment holds. Only the
        snapshot and the WAL's rewrite hold the buffer's lock: adds go on while the segment is
        written (a slow upload)."""
        if self.readonly:
            raise PermissionError(f"replay buffer {self.root} is open read-only")
        with self._seal_lock:
            with self._lock:
                ids = list(self.in_wal) + sorted(self.changed - set(self.in_wal))
                if not ids:
                    return None
                rows = [self.sessions[i].model_copy(deep=True) for i in ids]
                mark, changed = self.log.size, self.changed
                self.changed = set()
            try:
                name = self._write_segment(rows)
            except BaseException:
                with self._lock:
                    self.changed |= changed
                raise
            with self._lock:
                # Every record before `mark` is in the segment; what came after stays.
                self.log.keep_from(mark)
                sealed = set(ids)
                self.in_wal = [i for i in self.in_wal if i not in sealed]
                self.seal_error = None
            return name

    def _write_segment(self, rows: list[Session]) -> str:
        """The next segment, written whole (see `Storage.write_bytes`); returns its name."""
        table = pa.table(
            {
                "id": [s.id for s in rows],
                "question": [s.question for s in rows],
                "model_version": [s.model_version for s in rows],
                "r_tau": [s.r_tau for s in rows],
                "created_at": [s.created_at for s in rows],
                "record": [s.model_dump_json() for s in rows],
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        name = f"seg-{self.segments:08d}.parquet"
        self.store.write_bytes(name, sink.getvalue().to_pybytes())  # whole or not at all
        self.segments += 1
        return name

    def compact(
        self, keep_replay: int, seed: int = 0, strata: Mapping[str, str] | None = None
    ) -> dict:
        """Discards consumed sessions, keeping `keep_replay` of them (a random sample) as the
        replay sample for later sleeps; with `strata` (session id → its group, a family on the
        world), an equal share of each group as far as it has sessions, so an early skill keeps
        its place in the replay however many sessions later skills bring (`balanced`). Everything is sealed, the
        survivors are written as one new segment, then the old segments are deleted and the
        acks rewritten: a crash at any point leaves every unconsumed session (at worst, some
        consumed ones stay)."""
        self.seal()
        with self._seal_lock, self._lock:
            return self._compact(keep_replay, seed, strata or {})

    def _compact(self, keep_replay: int, seed: int, strata: Mapping[str, str]) -> dict:
        old = self._segment_names()
        consumed = [i for i in self.sessions if i in self.acked]
        keep = set(balanced(consumed, lambda i: strata.get(i, ""), keep_replay, seed))
        dropped = [i for i in consumed if i not in keep]
        if not dropped:
            return {"dropped": 0, "kept_replay": len(keep), "sessions": len(self.sessions)}
        survivors = [s for i, s in self.sessions.items() if i not in self.acked or i in keep]
        new = self._write_segment(survivors) if survivors else None
        for seg in old:
            if seg != new:
                self.store.delete(seg)
        for i in dropped:
            del self.sessions[i]
            self.leases.pop(i, None)
        self.acked = keep
        self.changed -= set(dropped)
        self.acks_log.keep_from(self.acks_log.size, [{"ids": sorted(keep)}] if keep else [])
        return {"dropped": len(dropped), "kept_replay": len(keep), "sessions": len(self.sessions)}

    @_locked
    def replay_sample(
        self, n: int, seed: int = 0, strata: Mapping[str, str] | None = None
    ) -> list[Session]:
        """Up to `n` consumed sessions: what earlier sleeps learned from, to replay (an equal
        share per group with `strata`, as in `compact`)."""
        consumed = [i for i in self.sessions if i in self.acked]
        strata = strata or {}
        return [self.sessions[i] for i in balanced(consumed, lambda i: strata.get(i, ""), n, seed)]

    @staticmethod
    def read_segment(uri: str | Path) -> list[Session]:
        """The sessions of one segment, by path or storage URI."""
        rows = read_table(str(uri), columns=["record"])["record"].to_pylist()
        return [Session.model_validate_json(r) for r in rows]

    def _read(self, name: str) -> list[Session]:
        return self.read_segment(self.store.url(name))

    def _segment_names(self) -> list[str]:
        return [n for n in self.store.list("", ".parquet") if n.startswith("seg-")]

    def segment_paths(self) -> list[str]:
        """Every segment, as a path or storage URI (`read_segment`, `cls_ray.replay.data`)."""
        return [self.store.url(n) for n in self._segment_names()]

    # -- consumers -------------------------------------------------------------------------
    @_locked
    def take(self, n: int, holder: str = "") -> list[Session]:
        """Up to `n` sessions that no consumer acknowledged and no live lease holds, leased to
        `holder` (`renew` extends only its own leases)."""
        now = time.time()
        out = []
        for sid, s in self.sessions.items():
            if len(out) >= n:
                break
            if sid in self.acked or self.leases.get(sid, (0.0, ""))[0] > now:
                continue
            self.leases[sid] = (now + self.lease_seconds, holder)
            out.append(s)
        return out

    def lease(self, n: int) -> dict:
        """Like `take`, for a reader of the sealed segments (`cls_ray.replay.data`): seals the
        WAL, leases up to `n` unconsumed sessions; returns their ids, holder, lease time, segment
        paths, and what only the WAL holds for them (feedback, PRM scores since sealing)."""
        self.seal()
        with self._lock:
            return self._lease(n)

    def _lease(self, n: int) -> dict:
        holder = uuid.uuid4().hex
        taken = self.take(n, holder)
        return {
            "ids": [s.id for s in taken],
            "holder": holder,
            "lease_s": self.lease_seconds,
            "segments": self.segment_paths(),
            "late": {
                s.id: {
                    "feedback": [f.model_dump() for f in s.feedback],
                    **s.model_dump(include={"prm_step_scores", "r_tau", "prm_version"}),
                }
                for s in taken
            },
        }

    @_locked
    def renew(self, ids: list[str], holder: str) -> int:
        """Extends `holder`'s leases on `ids` by the lease time, and takes back for it those
        that ran out (or that a restart forgot) unless another consumer leased them since;
        acknowledged ones are done. Returns how many it holds or are acknowledged."""
        now = time.time()
        mine = [
            i
            for i in ids
            if i in self.sessions
            and i not in self.acked
            and (self.leases.get(i, (0.0, holder))[1] == holder or self.leases[i][0] <= now)
        ]
        self.leases.update(dict.fromkeys(mine, (now + self.lease_seconds, holder)))
        return len(mine) + sum(i in self.acked for i in ids)

    @_locked
    def ack(self, ids: list[str]) -> int:
        new = [i for i in ids if i in self.sessions and i not in self.acked]
        if new:
            self.acks_log.append([{"ids": new}])
            self.acked.update(new)
            for i in new:
                self.leases.pop(i, None)
        return len(new)

    # -- reads -----------------------------------------------------------------------------
    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def ids(self) -> list[str]:
        return list(self.sessions)

    @_locked
    def with_feedback(self) -> list[dict]:
        """Sessions that carry user feedback (ratings, corrected steps): the PRM's human labels."""
        return [s.model_dump() for s in self.sessions.values() if s.feedback]

    def depth(self) -> dict:
        """How full the buffer is, from counters (no pass over the sessions): cheap enough to
        read every second (the actor's gauges)."""
        return {
            "sessions": len(self.sessions),
            "unsealed": len(self.in_wal),
            "segments": self.segments,
            "acked": len(self.acked),
            "pending": len(self.sessions) - len(self.acked),
            "wal_bytes": self.log.size,
        }

    @_locked
    def stats(self) -> dict:
        versions: dict[str, int] = {}
        for s in self.sessions.values():
            versions[s.model_version] = versions.get(s.model_version, 0) + 1
        return {
            **self.depth(),
            "by_version": versions,
            "damaged_records": self.log.skipped,
            "seal_error": self.seal_error,
        }
