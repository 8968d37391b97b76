"""Review findings on the compiled OKX core (``_okxbook``): what one hostile message leaves
allocated. The token scratch a side (and the push parser) keeps between messages is released
after a message of more than a usual snapshot's levels, as the Python core's lists are: a
frame of a few MB must not hold ~56 bytes a level for the rest of the process's life.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from tests.venues.native_cores import require_native

from astra.venues.okx import book

_okxbook = require_native("astra.venues.okx._okxbook")

LEVELS = 100_000
# Deletes of absent levels: the side stays empty, only the scratch could stay allocated.
HUGE = b"[" + b",".join(b'["%d","0","0","0"]' % k for k in range(1, LEVELS + 1)) + b"]"
KEPT = 2 << 20  # bytes that may stay allocated (the tokens alone would be ~5.6 MB)


def _left_after(call) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        del result
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["apply", "load"])
def test_a_huge_message_leaves_no_scratch_on_a_side(method):
    side = _okxbook.BookSide(descending=True)
    assert _left_after(lambda: getattr(side, method)(HUGE)) < KEPT
    assert len(side) == 0
    side.apply(b'[["1","2","0","1"]]')  # still works after the release
    assert side.texts == ["1:2"]


def test_a_huge_push_leaves_no_scratch_in_the_parser():
    frame = (
        b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":'
        + HUGE
        + b',"bids":[],"ts":"1","checksum":0}]}'
    )
    assert _left_after(lambda: _okxbook.parse_push(frame) is not None) < KEPT
    assert _okxbook.parse_push(frame) is not None  # parsed in C
    push = book.decode_push(frame)
    c, py = _okxbook.Book(), book.PyBook()
    assert c.update(push.data[0], True) == py.update(book.py_decode_push(frame).data[0], True)


def test_padded_arg_objects_are_not_kept_by_the_arg_cache():
    """The parser caches each arg object's text -> Arg (4096 entries at most): a venue
    padding ``arg`` with an unknown key must not make that 4096 frames' worth of bytes."""

    def frames():
        for k in range(60):
            pad = str(k).encode() * (100_000 // len(str(k)))
            yield (
                b'{"arg":{"channel":"books","instId":"BTC-USDT","pad":"%s"},"action":"update",'
                b'"data":[{"asks":[],"bids":[["1","2","0","1"]],"ts":"1","checksum":0}]}' % pad
            )

    def parse_all():
        for frame in frames():
            push = _okxbook.parse_push(frame)
            assert push is not None and push.arg.instId == "BTC-USDT"
            assert book.decode_push(frame).arg == book.py_decode_push(frame).arg

    assert _left_after(parse_all) < KEPT  # 60 x 100 KB of arg text otherwise
