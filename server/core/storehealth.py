"""Whether the store can be written: one error logged per outage, new episodes refused until it can again."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: What a participant is told when their episode stops because the recording cannot be saved.
STORAGE_MESSAGE = (
    "The server cannot save recordings right now, so this game has stopped. What you played so far is kept. "
    "Please tell the researcher; you can try again in a few minutes."
)


class StoreHealth:
    """The spool's state as the writers found it. `failed(e)` after a write error (logged once per outage);
    `writable()` says whether a new episode may start, probing the spool again (at most once every `retry_s`) with
    a file of `probe_bytes` (at `probe`, given by the spool) while it is failed."""

    def __init__(
        self,
        probe: Path,
        probe_bytes: int = 256 * 1024,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = Path(probe)
        self.probe_bytes = probe_bytes
        self.retry_s = retry_s
        self.clock = clock
        self.error: OSError | None = None
        self.errors = 0  # write errors in the current outage
        self._since = 0.0
        self._probed = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, e: OSError) -> None:
        self.errors += 1
        if self.error is None:
            self.error = e
            self._since = self._probed = self.clock()
            log.error(
                "the store cannot be written (%s): open episodes close as interrupted (storage_error) and new ones are "
                "refused until it can",
                e,
            )

    def writable(self) -> bool:
        if self.error is None:
            return True
        now = self.clock()
        if now - self._probed < self.retry_s:
            return False
        self._probed = now
        probe = self.probe
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * self.probe_bytes)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        log.warning(
            "the store can be written again after %.0f s and %d write errors: new episodes are accepted",
            now - self._since,
            self.errors,
        )
        self.error, self.errors = None, 0
        return True
