"""The demonstrators of this process, by socket id and by reconnect token."""

from __future__ import annotations

import shutil

from . import format as fmt
from .demonstrator import PAUSED, Demonstrator


class Registry:
    """All demonstrators of this process, by socket id and by reconnect token."""

    def __init__(self, max_demonstrators: int) -> None:
        self.max = max_demonstrators
        self.by_sid: dict[str, Demonstrator] = {}
        self.by_token: dict[str, Demonstrator] = {}

    def active(self) -> int:
        return sum(1 for d in self.by_token.values() if not d.gone)

    def counts(self) -> dict[str, int]:
        """The admitted demonstrators (`demonstrators`, what the limit counts) by what they are doing: `playing`
        (connected, in an episode or between two), `paused` (the tab hidden, or the connection dropped) and, of the
        paused, `waiting_rejoin` (disconnected: the slot is held for the reconnect grace, only for a played episode)."""
        live = [d for d in self.by_token.values() if not d.gone]
        paused = [d for d in live if d.state == PAUSED or not d.connected]
        return {
            "demonstrators": len(live),
            "playing": len(live) - len(paused),
            "paused": len(paused),
            "waiting_rejoin": sum(1 for d in paused if not d.connected),
        }

    def full(self) -> bool:
        return self.active() >= self.max

    def add(self, d: Demonstrator) -> None:
        self.by_sid[d.sid] = d
        self.by_token[d.token] = d

    def rebind(self, d: Demonstrator, sid: str) -> None:
        self.by_sid.pop(d.sid, None)
        self.by_sid[sid] = d

    def remove(self, d: Demonstrator) -> None:
        if self.by_sid.get(d.sid) is d:
            del self.by_sid[d.sid]
        if self.by_token.get(d.token) is d:
            del self.by_token[d.token]
        d.release()

    def shutdown(self) -> list[str]:
        """Close every open episode as interrupted (server stop), delete the scratch files of an unrecorded practice
        round, and give every emulator back to the pool; returns the IDs of the recorded episodes closed."""
        closed = []
        for d in list(self.by_token.values()):
            w = d.writer
            if w is not None and not w.closed:
                w.append_event("end", frame=d.frame, detail=fmt.SERVER_STOP)
                w.flush(final=True)
                meta = w.close(fmt.STATUS_INTERRUPTED, fmt.SERVER_STOP)
                if d.recorded:
                    closed.append(meta["traj_id"])
                else:
                    shutil.rmtree(w.dir, ignore_errors=True)
            d.writer = None
            d.gone = True
            d.release()
        return closed
