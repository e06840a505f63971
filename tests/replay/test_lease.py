import time

from cls_ray.replay import ReplayBuffer
from cls_ray.replay.lease import kept
from tests.helpers import make_session

LEASE = 0.6  # seconds: short, with margins a busy machine keeps


def _buffer(tmp_path, n: int) -> ReplayBuffer:
    buf = ReplayBuffer(tmp_path, lease_seconds=LEASE)
    for i in range(n):
        buf.add(make_session(i))
    return buf


def test_renew_extends_only_the_holders_leases_and_takes_back_what_no_one_took(tmp_path):
    buf = _buffer(tmp_path, 4)
    mine = buf.lease(3)
    held = mine["ids"]
    assert mine["lease_s"] == LEASE and held == ["s0000", "s0001", "s0002"]
    buf.ack(held[:1])
    # the acknowledged one counts as done; an id never leased by anyone is taken for the holder
    assert buf.renew(held, mine["holder"]) == 3
    assert buf.renew(["s0003"], "someone else's") == 1
    assert buf.take(10) == []
    time.sleep(LEASE + 0.1)  # every lease ran out
    theirs = buf.lease(1)  # another consumer takes s0001
    assert theirs["ids"] == ["s0001"]
    assert buf.renew(held, mine["holder"]) == 2  # s0000 (acked), s0002 taken back; not s0001
    assert buf.renew(["s0001"], theirs["holder"]) == 1
    buf.close()


def test_a_lease_kept_by_a_long_consumer_is_not_handed_out_until_the_consumer_ends(tmp_path):
    """A sleep that outlives the lease time keeps its sessions (a second sleep gets none of
    them); when it ends without acknowledging, they are free one lease time later."""
    buf = _buffer(tmp_path, 2)
    lease = buf.lease(2)
    with kept(buf, lease["ids"], lease["holder"], lease["lease_s"]) as beats:
        for _ in range(4):  # four lease times
            time.sleep(LEASE)
            assert buf.take(10) == []
    assert beats["renewals"] >= 12 and beats["failed"] == 0 and beats["lost"] == 0
    assert buf.take(10) == []  # the last renewal still holds
    time.sleep(LEASE + 0.1)
    assert sorted(s.id for s in buf.take(10)) == ["s0000", "s0001"]
    buf.close()


def test_a_failing_renewal_is_retried_and_a_lost_lease_reported():
    class Flaky:
        def __init__(self):
            self.calls = 0

        def renew(self, ids, holder):
            self.calls += 1
            if self.calls == 1:
                raise TimeoutError("the buffer actor did not answer")
            return len(ids) - 1  # another consumer holds one of them

    with kept(Flaky(), ["a", "b"], "h", 0.2) as beats:
        time.sleep(0.3)
    assert beats["failed"] == 1 and beats["renewals"] >= 1 and beats["lost"] == 1
