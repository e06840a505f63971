"""Keeping a lease while the work on it runs.

A sleep leases the sessions it consumes (`Buffer.lease`); a lease that is neither acknowledged
nor renewed runs out after the buffer's lease time, and the sessions go to the next consumer.
A sleep with dreams can run longer than that, so while it works a thread renews the lease every
third of the lease time (a heartbeat, like a queue's visibility timeout). If the sleep's process
dies the renewals stop and the sessions are free again one lease time later; a failed renewal
is logged and tried again at the next beat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence

from cls_ray.ports import Buffer

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def kept(buffer: Buffer, ids: Sequence[str], lease_s: float) -> Iterator[dict]:
    """Renews the lease on `ids` every `lease_s / 3` seconds until the block ends; yields a
    dict that counts the renewals (`"renewals"`) and failed ones (`"failed"`)."""
    counts = {"renewals": 0, "failed": 0}
    if not ids:
        yield counts
        return
    stop = threading.Event()
    every = max(lease_s / 3, 0.01)

    def beat() -> None:
        while not stop.wait(every):
            try:
                buffer.renew(list(ids))
                counts["renewals"] += 1
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                counts["failed"] += 1
                logger.warning("renewing the lease on %d session(s) failed: %s", len(ids), e)

    thread = threading.Thread(target=beat, name="lease-keeper", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=every + 5)
