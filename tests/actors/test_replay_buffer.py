import os
import signal

import pytest

from actors.replay_buffer import start_replay_buffer
from tests.helpers import make_session

pytestmark = pytest.mark.ray


def test_sigkill_while_writing_loses_no_acknowledged_session(tmp_path, ray_local):
    ray = ray_local
    actor = start_replay_buffer(str(tmp_path / "buffer"), name="buf-kill-test", seal_every=7)
    pid = ray.get(actor.pid.remote())
    refs = []
    for i in range(40):
        refs.append((f"s{i:04d}", actor.add.remote(make_session(i).model_dump())))
        if i == 20:
            os.kill(pid, signal.SIGKILL)  # sessions are in flight
    acknowledged = []
    for sid, ref in refs:
        try:
            assert ray.get(ref, timeout=120) == sid
            acknowledged.append(sid)
        except ray.exceptions.RayActorError:
            # Not acknowledged: the producer retries, as a server would.
            assert ray.get(actor.add.remote(make_session(int(sid[1:])).model_dump())) == sid
            acknowledged.append(sid)
    assert ray.get(actor.pid.remote()) != pid, "the actor was not restarted"
    ids = ray.get(actor.ids.remote())
    assert len(ids) == len(set(ids)), "a session is stored twice"
    assert set(acknowledged) <= set(ids)
    assert len(ids) == 40
    taken = ray.get(actor.take.remote(100))
    assert ray.get(actor.ack.remote([s["id"] for s in taken])) == 40
    assert ray.get(actor.take.remote(100)) == []
    ray.kill(actor, no_restart=False)
    assert ray.get(actor.take.remote(100)) == [], "acknowledged sessions came back after a restart"
    ray.kill(actor)
