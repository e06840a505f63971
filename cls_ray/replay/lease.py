"""Keeping a lease while the work on it runs.

A sleep leases the sessions it consumes (`Buffer.lease`); a lease that is neither acknowledged
nor renewed runs out after the buffer's lease time, and the sessions go to the next consumer.
A sleep with dreams can run longer than that, so while it works a thread renews the lease on a
fixed beat, four times per lease time (a heartbeat, like a queue's visibility timeout): one
slow or failed renewal leaves three more before the lease runs out, and a lease that ran out
anyway is taken back unless another consumer leased the sessions since (`Buffer.renew`
checks the holder). If the sleep's process dies the renewals stop and the sessions are free
again one lease time later.

What the keeper saw is returned with the sleep's result: renewals, failed ones, and `lost`,
the most sessions another consumer held at one beat (a warning in the log; the sleep goes on,
and the sessions' acknowledgement is idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence

from cls_ray.ports import Buffer

logger = logging.getLogger(__name__)

BEATS_PER_LEASE = 4


@contextlib.contextmanager
def kept(buffer: Buffer, ids: Sequence[str], holder: str, lease_s: float) -> Iterator[dict]:
    """Renews `holder`'s lease on `ids` every `lease_s / 4` seconds (on a fixed schedule, so a
    slow renewal does not push the next one back) until the block ends; yields the counts
    `{"renewals", "failed", "lost"}`, filled in as the beats go."""
    counts = {"renewals": 0, "failed": 0, "lost": 0}
    if not ids:
        yield counts
        return
    ids = list(ids)
    stop = threading.Event()
    every = max(lease_s / BEATS_PER_LEASE, 0.01)
    start = time.monotonic()

    def beat() -> None:
        k = 1
        while not stop.wait(max(0.0, start + k * every - time.monotonic())):
            k = int((time.monotonic() - start) / every) + 1  # beats a slow call overran: skip
            try:
                held = buffer.renew(ids, holder)
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                counts["failed"] += 1
                logger.warning("renewing the lease on %d session(s) failed: %s", len(ids), e)
                continue
            counts["renewals"] += 1
            if held < len(ids):
                counts["lost"] = max(counts["lost"], len(ids) - held)
                logger.warning(
                    "%d of %d leased session(s) are held by another consumer or gone",
                    len(ids) - held,
                    len(ids),
                )

    thread = threading.Thread(target=beat, name="lease-keeper", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=5.0)  # a renewal in flight ends on its own timeout
