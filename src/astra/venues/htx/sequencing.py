"""The pure part of HTX's book integrity rules (stated in ``feed.py``): ``MbpSync`` joins
``mbp`` increments to a ``req`` refresh and checks each ``prevSeqNum`` against the previous
``seqNum``; ``FullBookDiff`` turns each ``depth.step0`` full-book push into the difference
from the push before it.

Invariants: nothing here does I/O. ``MbpSync`` never lets an increment through out of
sequence. ``FullBookDiff`` applies every push that is not stale (the held book always equals
the latest push applied) and orders pushes by ``mrid`` where they carry one (contracts, whose
``version`` is only the push's epoch second), else by ``version`` (spot).
"""

from __future__ import annotations

from .schemas import DepthTick, Level, MbpTick

__all__ = ["FullBookDiff", "MbpSync", "SequenceGap", "SnapshotMisaligned", "VersionRegressed"]


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


class FullBookDiff:
    """The last full-book push of one market and the difference of each new one (pure)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.seq: int | None = None  # the held push's order id: mrid, else version
        self.version: int | None = None

    @property
    def synced(self) -> bool:
        return self.seq is not None

    def load(self, tick: DepthTick) -> None:
        """Take ``tick`` as the snapshot."""
        self.bids = {p: q for p, q in tick.bids if q > 0}
        self.asks = {p: q for p, q in tick.asks if q > 0}
        self.seq = _order_id(tick)
        self.version = tick.version

    def changes(self, tick: DepthTick) -> tuple[list[Level], list[Level]] | None:
        """The level changes from the held book to ``tick`` (which becomes the held book),
        empty for a push that restates it; None for a stale push (dropped). Raises
        VersionRegressed when the id goes back otherwise (the venue restarted)."""
        seq = _order_id(tick)
        if seq < self.seq:
            if tick.mrid is not None and tick.version <= self.version:
                return None  # taken before the held push: an older book
            name = "version" if tick.mrid is None else "mrid"
            raise VersionRegressed(f"{name} {seq} after {self.seq}")
        self.seq, self.version = seq, tick.version
        bids, self.bids = _side_changes(self.bids, tick.bids)
        asks, self.asks = _side_changes(self.asks, tick.asks)
        return bids, asks


def _order_id(tick: DepthTick) -> int:
    return tick.version if tick.mrid is None else tick.mrid


def _side_changes(
    old: dict[float, float], levels: list[Level]
) -> tuple[list[Level], dict[float, float]]:
    new = {p: q for p, q in levels if q > 0}
    get = old.get
    out = [(p, q) for p, q in new.items() if get(p) != q]
    out += [(p, 0.0) for p in old if p not in new]
    return out, new
