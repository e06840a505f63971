import time

from cls_ray.replay import ReplayBuffer
from cls_ray.replay.lease import kept
from tests.helpers import make_session


def _buffer(tmp_path, n: int, lease_s: float) -> ReplayBuffer:
    buf = ReplayBuffer(tmp_path, lease_seconds=lease_s)
    for i in range(n):
        buf.add(make_session(i))
    return buf


def test_renew_extends_only_live_unacknowledged_leases(tmp_path):
    buf = _buffer(tmp_path, 4, lease_s=0.3)
    held = [s.id for s in buf.take(3)]
    buf.ack(held[:1])
    assert buf.renew(held + ["s0003"]) == 2  # acked and never-leased ids are not renewed
    time.sleep(0.35)  # no renewal since: every lease ran out
    assert buf.renew(held) == 0
    assert [s.id for s in buf.take(10)] == ["s0001", "s0002", "s0003"]
    buf.close()


def test_a_lease_kept_by_a_long_consumer_is_not_handed_out_until_the_consumer_ends(tmp_path):
    """A sleep that outlives the lease time keeps its sessions (a second sleep gets none of
    them); when it ends without acknowledging, they are free one lease time later."""
    buf = _buffer(tmp_path, 2, lease_s=0.3)
    lease = buf.lease(2)
    assert lease["lease_s"] == 0.3
    with kept(buf, lease["ids"], lease["lease_s"]) as beats:
        for _ in range(4):  # 1.2 s: four lease times
            time.sleep(0.3)
            assert buf.take(10) == []
    assert beats["renewals"] >= 3 and beats["failed"] == 0
    assert buf.take(10) == []  # the last renewal still holds
    time.sleep(0.35)
    assert sorted(s.id for s in buf.take(10)) == ["s0000", "s0001"]
    buf.close()


def test_a_failing_renewal_is_counted_and_retried(tmp_path):
    class Flaky:
        def __init__(self):
            self.calls = 0

        def renew(self, ids):
            self.calls += 1
            if self.calls == 1:
                raise TimeoutError("the buffer actor did not answer")
            return len(ids)

    flaky = Flaky()
    with kept(flaky, ["a"], 0.09) as beats:
        time.sleep(0.2)
    assert beats["failed"] == 1 and beats["renewals"] >= 1
