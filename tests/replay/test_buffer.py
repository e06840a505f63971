import errno
import json
import shutil
import time

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from cls_ray.replay import ReplayBuffer
from cls_ray.replay.data import read_leased
from cls_ray.replay.owners import token_digest
from cls_ray.replay.wal import FolderLocked
from tests.helpers import make_session


def test_added_sessions_survive_reopening(tmp_path):
    buf = ReplayBuffer(tmp_path, seal_every=1000)
    for i in range(5):
        buf.add(make_session(i))
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path)
    assert again.ids() == [f"s{i:04d}" for i in range(5)]
    s = again.get("s0003")
    assert s.steps[0].token_ids == [5, 6, 7] and s.steps[0].logprobs == [-0.1, -0.2, -0.3]
    assert s.model_version == "v1"


def test_add_is_idempotent_by_id(tmp_path):
    buf = ReplayBuffer(tmp_path)
    buf.add(make_session(1))
    buf.add(make_session(1).model_dump())
    assert len(buf.ids()) == 1
    buf.close()  # the writer's process ends
    assert len(ReplayBuffer(tmp_path).ids()) == 1


def test_a_torn_last_record_is_skipped(tmp_path):
    buf = ReplayBuffer(tmp_path)
    buf.add(make_session(1))
    with (tmp_path / "wal.jsonl").open("a") as f:
        f.write('{"op": "add", "session": {"id": "half')  # the crash hit mid-write
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path)
    assert again.ids() == ["s0001"]
    again.add(make_session(2))
    again.close()
    assert ReplayBuffer(tmp_path).ids() == ["s0001", "s0002"]


def test_sealed_segments_are_parquet_and_recovered(tmp_path):
    buf = ReplayBuffer(tmp_path, seal_every=4)
    for i in range(10):
        buf.add(make_session(i, version="v2" if i % 2 else "v1"))
    assert buf.stats()["segments"] == 2 and buf.stats()["unsealed"] == 2
    seg = buf.segment_paths()[0]
    table = pq.read_table(seg)
    assert table.column("id").to_pylist() == [f"s{i:04d}" for i in range(4)]
    assert json.loads(table.column("record")[0].as_py())["steps"][0]["logprobs"] == [
        -0.1,
        -0.2,
        -0.3,
    ]
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path, seal_every=4)
    assert again.ids() == [f"s{i:04d}" for i in range(10)]
    assert again.stats()["by_version"] == {"v1": 5, "v2": 5}
    again.close()
    # A seal that crashed before its rename leaves only a temporary file: ignored and removed.
    (tmp_path / "segments" / "seg-00000009.tmp").write_bytes(b"garbage")
    assert len(ReplayBuffer(tmp_path).ids()) == 10


def test_take_and_ack_hand_out_each_session_until_acknowledged(tmp_path):
    buf = ReplayBuffer(tmp_path, lease_seconds=0.2)
    for i in range(6):
        buf.add(make_session(i))
    first = [s.id for s in buf.take(4)]
    second = [s.id for s in buf.take(4)]
    assert first == ["s0000", "s0001", "s0002", "s0003"] and second == ["s0004", "s0005"]
    assert buf.ack(first) == 4 and buf.ack(first) == 0

    time.sleep(0.25)  # the lease on `second` runs out unacknowledged: handed out again
    assert [s.id for s in buf.take(10)] == second
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path)  # acks are durable; leases are not
    assert [s.id for s in again.take(10)] == second


def test_a_session_added_consumed_is_never_handed_out_but_replayed_after_restart(tmp_path):
    """A promoted sleep's dreams: stored as learned from, for later sleeps' replay only."""
    buf = ReplayBuffer(tmp_path, seal_every=1000)
    buf.add(make_session(1))
    buf.add(make_session(2), consumed=True)
    assert [s.id for s in buf.take(10)] == ["s0001"]
    buf.close()
    again = ReplayBuffer(tmp_path)
    assert [s.id for s in again.take(10)] == ["s0001"]  # the lease ran with the process
    assert [s.id for s in again.replay_sample(10)] == ["s0002"]


def test_feedback_joins_its_session_across_seal_and_restart(tmp_path):
    buf = ReplayBuffer(tmp_path, seal_every=3)
    buf.add(make_session(0))
    buf.add_feedback("s0000", {"rating": 1.0, "role": "curator"})
    buf.add(make_session(1))
    buf.add(make_session(2))  # seals 0..2
    buf.add_feedback("s0000", {"rating": -1.0, "corrected_steps": ["x ."], "role": "curator"})
    buf.add(make_session(3))
    buf.add(make_session(4))
    buf.add(make_session(5))  # seals again
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path)
    ratings = [f.rating for f in again.get("s0000").feedback]
    assert ratings == [1.0, -1.0]
    with pytest.raises(KeyError):
        again.add_feedback("nope", {"rating": 0.0})


def test_feedback_comes_from_the_sessions_owner_or_a_curator(tmp_path):
    """The key that asked, the holder of the session's feedback token, or a curator; nobody
    else, and a refused feedback writes nothing."""
    buf = ReplayBuffer(tmp_path)
    mine = make_session(0)
    mine.owner, mine.owner_token_sha256 = "k-alice", token_digest("secret-token")
    buf.add(mine)
    buf.add_feedback("s0000", {"rating": 1.0, "by": "k-alice", "role": "user"})
    buf.add_feedback("s0000", {"rating": 0.5}, token="secret-token")  # anonymous, with the token
    for fb, token in [
        ({"rating": -1.0, "by": "k-mallory", "role": "user"}, None),
        ({"rating": -1.0}, None),
        ({"rating": -1.0}, "guessed"),
    ]:
        with pytest.raises(PermissionError, match="curator"):
            buf.add_feedback("s0000", fb, token=token)
    buf.add_feedback("s0000", {"corrected_steps": ["y ."], "by": "k-cora", "role": "curator"})
    buf.close()  # the writer's process ends
    got = ReplayBuffer(tmp_path).get("s0000").feedback
    assert [(f.rating, f.role) for f in got] == [
        (1.0, "user"),
        (0.5, "anonymous"),
        (None, "curator"),
    ]
    assert [f.trusted for f in got] == [False, False, True]


def test_prm_scores_join_their_session_across_seal_and_restart(tmp_path):
    buf = ReplayBuffer(tmp_path, seal_every=3)
    for i in range(3):
        buf.add(make_session(i))  # sealed before any score arrives
    buf.set_scores("s0001", [0.9, 0.2], 0.2, prm="v1")
    for i in range(3, 6):
        buf.add(make_session(i))  # seals again: the score record is carried over
    buf.set_scores("s0004", [0.8, 0.7], 0.7, prm="v1")
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path)
    s1, s4 = again.get("s0001"), again.get("s0004")
    assert s1.prm_step_scores == [0.9, 0.2] and s1.r_tau == 0.2 and s1.prm_version == "v1"
    assert s4.r_tau == 0.7 and again.get("s0000").r_tau is None
    with pytest.raises(KeyError):
        again.set_scores("nope", [0.5], 0.5)


def test_bad_session_is_rejected_before_anything_is_written(tmp_path):
    buf = ReplayBuffer(tmp_path)
    with pytest.raises(ValidationError):
        buf.add({"question": "", "model_version": "v1"})
    with pytest.raises(ValidationError):
        buf.add({"question": "q", "model_version": "v1", "surprise": 1})
    assert not (tmp_path / "wal.jsonl").exists() or (tmp_path / "wal.jsonl").read_text() == ""


@pytest.mark.ray
def test_ray_data_reads_the_segments(tmp_path, ray_local):
    buf = ReplayBuffer(tmp_path, seal_every=5)
    for i in range(10):
        buf.add(make_session(i))
    ds = ray_local.data.read_parquet(buf.segment_paths())
    assert sorted(r["id"] for r in ds.take_all()) == [f"s{i:04d}" for i in range(10)]


@pytest.mark.ray
def test_a_sleep_reads_its_leased_sessions_from_the_segments_with_ray_data(tmp_path, ray_local):
    """What a lease hands out is read with Ray Data from the sealed segments, with what arrived
    after sealing (feedback, scores); leased sessions are not handed out twice."""
    buf = ReplayBuffer(tmp_path, seal_every=4)
    for i in range(6):  # one sealed segment of 4, two sessions still in the WAL
        buf.add(make_session(i))
    buf.add_feedback("s0001", {"rating": 1, "role": "curator"})
    buf.set_scores("s0002", [0.9, 0.8], 0.8, "prm-v1")
    lease = buf.lease(5)
    assert lease["ids"] == [f"s{i:04d}" for i in range(5)]
    assert buf.stats()["unsealed"] == 0  # the lease sealed the WAL first
    got = read_leased(lease)
    assert [s["id"] for s in got] == lease["ids"]
    assert got[1]["feedback"][0]["rating"] == 1
    assert got[2]["prm_step_scores"] == [0.9, 0.8] and got[2]["prm_version"] == "prm-v1"
    assert got[4] == buf.get("s0004").model_dump()
    assert buf.lease(5)["ids"] == ["s0005"]
    with pytest.raises(RuntimeError, match="in no segment"):
        read_leased({**lease, "segments": lease["segments"][:1], "ids": ["s0005"]})


def test_compaction_discards_consumed_sessions_but_the_replay_sample(tmp_path):
    """After a sleep, consumed sessions go, but for a random replay sample; nothing unconsumed
    is lost, the result survives a restart, and a compaction that crashed halfway (the new
    segment written, old ones still there) recovers to a consistent buffer."""
    buf = ReplayBuffer(tmp_path / "buf", seal_every=4)
    ids = [buf.add(make_session(i)) for i in range(10)]
    buf.set_scores(ids[9], [0.9, 0.9], 0.9, "prm-v1")  # a score record for an unsealed session
    consumed = ids[:7]
    buf.ack(consumed)
    snapshot = tmp_path / "before"
    shutil.copytree(tmp_path / "buf", snapshot)
    out = buf.compact(keep_replay=2, seed=0)
    assert out == {"dropped": 5, "kept_replay": 2, "sessions": 5}
    kept = {s.id for s in buf.replay_sample(10)}
    assert len(kept) == 2 and kept <= set(consumed)
    buf.close()  # the writer's process ends
    again = ReplayBuffer(tmp_path / "buf")
    assert set(again.ids()) == set(ids[7:]) | kept
    assert {s.id for s in again.take(10)} == set(ids[7:])  # the unconsumed, and only them
    assert again.get(ids[9]).r_tau == 0.9
    assert again.stats()["acked"] == 2 and again.stats()["pending"] == 3
    assert len(again.segment_paths()) == 1

    # A crash after the new segment's rename, before the old segments went: old and new
    # segments both on disk, the old acks file; recovery dedupes and loses nothing.
    crashed = tmp_path / "crashed"
    shutil.copytree(snapshot, crashed)
    ReplayBuffer(crashed).seal()
    shutil.copy(again.segment_paths()[0], crashed / "segments" / "seg-00000099.parquet")
    rec = ReplayBuffer(crashed)
    assert set(ids) <= set(rec.ids())
    assert {s.id for s in rec.take(10)} == set(ids[7:])


def test_a_damaged_record_anywhere_is_cut_and_the_records_after_it_survive(tmp_path):
    """Records are framed with length and CRC: a flipped byte in the middle of the WAL costs
    that record only, and the recovered buffer counts it."""
    buf = ReplayBuffer(tmp_path)
    for i in range(3):
        buf.add(make_session(i))
    buf.close()
    wal = tmp_path / "wal.jsonl"
    lines = wal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"s0001", b"s0009")  # same length, wrong checksum
    wal.write_bytes(b"\n".join(lines))
    again = ReplayBuffer(tmp_path)
    assert again.ids() == ["s0000", "s0002"]
    assert again.stats()["damaged_records"] == 1


def test_a_failed_append_is_cut_before_the_next_and_nothing_acknowledged_is_lost(tmp_path):
    """A full disk lets half a record through and the add raises (not acknowledged); the
    next add is not glued to the half record, and both acknowledged sessions survive."""
    buf = ReplayBuffer(tmp_path)
    buf.add(make_session(0))
    buf.log.fail_writes = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        buf.add(make_session(1))
    assert buf.ids() == ["s0000"]  # not acknowledged, not kept
    buf.log.fail_writes = None
    buf.add(make_session(2))
    buf.close()
    again = ReplayBuffer(tmp_path)
    assert again.ids() == ["s0000", "s0002"] and again.stats()["damaged_records"] == 0


def test_a_failed_seal_does_not_fail_the_add_and_is_reported(tmp_path, monkeypatch):
    buf = ReplayBuffer(tmp_path, seal_every=2)
    real = buf.store.write_bytes

    def down(name, data):
        raise ConnectionError("storage unreachable")

    monkeypatch.setattr(buf.store, "write_bytes", down)
    for i in range(3):
        buf.add(make_session(i))  # the seal at 2 fails; the adds are acknowledged
    st = buf.stats()
    assert st["unsealed"] == 3 and "storage unreachable" in st["seal_error"]["error"]
    monkeypatch.setattr(buf.store, "write_bytes", real)
    buf.add(make_session(3))
    st = buf.stats()
    assert st["unsealed"] == 0 and st["seal_error"] is None and st["segments"] == 1
    buf.close()
    assert ReplayBuffer(tmp_path).ids() == [f"s{i:04d}" for i in range(4)]


def test_late_feedback_is_sealed_again_and_not_carried_in_the_wal_forever(tmp_path):
    """Feedback on a sealed session is written into the next segment (a later copy wins), so
    after that seal the WAL holds only what came after it."""
    buf = ReplayBuffer(tmp_path, seal_every=2)
    buf.add(make_session(0))
    buf.add(make_session(1))  # sealed
    buf.add_feedback("s0000", {"rating": 1.0, "role": "curator"})
    buf.set_scores("s0001", [0.5], 0.5)
    buf.add(make_session(2))
    buf.add(make_session(3))  # sealed, with s0000 and s0001 again
    assert buf.stats()["wal_bytes"] == 0
    buf.close()
    again = ReplayBuffer(tmp_path)
    assert again.get("s0000").feedback[0].rating == 1.0 and again.get("s0001").r_tau == 0.5
    assert again.ids() == [f"s{i:04d}" for i in range(4)]


def test_one_writer_per_folder(tmp_path):
    buf = ReplayBuffer(tmp_path)
    buf.add(make_session(0))
    with pytest.raises(FolderLocked, match="in use by another writer"):
        ReplayBuffer(tmp_path)
    reader = ReplayBuffer(tmp_path, readonly=True)  # a reader takes no lock and writes nothing
    assert reader.ids() == ["s0000"]
    with pytest.raises(PermissionError):
        reader.seal()
    buf.close()
    ReplayBuffer(tmp_path).add(make_session(1))
