"""The pure part of HTX's ``mbp`` book integrity rule (stated in ``feed.py``): ``MbpSync``
joins ``mbp`` increments to a ``req`` refresh and checks each ``prevSeqNum`` against the
previous ``seqNum``. The errors of both book rules are here; ``depth.step0`` full-book pushes
are diffed by ``fullbook.FullBookDiff``.

Invariants: nothing here does I/O. ``MbpSync`` never lets an increment through out of
sequence.
"""

from __future__ import annotations

from .schemas import MbpTick

__all__ = ["MbpSync", "SequenceGap", "SnapshotMisaligned", "VersionRegressed"]


class SequenceGap(Exception):
    """An increment does not continue the chain: updates were lost."""


class SnapshotMisaligned(Exception):
    """The refresh cannot be joined to the buffered increments."""


class VersionRegressed(Exception):
    """A full-book push is older than the one before it."""


class MbpSync:
    """Sequencing of one ``mbp`` increment stream against refreshes (pure: no I/O)."""

    def __init__(self, max_buffer: int = 10_000) -> None:
        self.max_buffer = max_buffer
        self.reset()

    def reset(self) -> None:
        self.pending: list[MbpTick] = []
        self.synced = False
        self.prev: int | None = None  # seqNum of the last increment in the book
        self.bridging = False  # until the first increment after the refresh is applied

    def buffer(self, tick: MbpTick) -> None:
        if len(self.pending) >= self.max_buffer:  # a refresh that never comes: keep newest
            del self.pending[0]
        self.pending.append(tick)

    def start(self, seq_num: int) -> list[MbpTick]:
        """Sync on a refresh with ``seqNum`` ``seq_num``: the buffered increments to apply on
        top of it, in order. Raises SnapshotMisaligned (keep buffering, ask again) or
        SequenceGap (the buffer itself has a hole)."""
        events = [t for t in self.pending if t.seqNum > seq_num]
        if events and events[0].prevSeqNum != seq_num:
            self.pending = events
            raise SnapshotMisaligned(
                f"refresh seqNum={seq_num} but next increment has "
                f"prevSeqNum={events[0].prevSeqNum} seqNum={events[0].seqNum}"
            )
        self.pending = []
        self.synced, self.prev, self.bridging = True, seq_num, True
        return [t for t in events if self.push(t)]

    def push(self, tick: MbpTick) -> bool:
        """True: apply it; False: already in the refresh (or buffered, when not synced).
        Raises SequenceGap when the chain breaks."""
        if not self.synced:
            self.buffer(tick)
            return False
        if self.bridging:
            if tick.seqNum <= self.prev:  # sent before the refresh was taken
                return False
            self.bridging = False
        if tick.prevSeqNum != self.prev:
            raise SequenceGap(f"prevSeqNum={tick.prevSeqNum} but previous seqNum={self.prev}")
        self.prev = tick.seqNum
        return True
