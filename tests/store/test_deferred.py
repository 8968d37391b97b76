"""``astra.store.deferred``: read-your-writes across threads. A ``settle()`` called while
another thread is running a deferred write (taken from the queue, not yet done) waits for it."""

from __future__ import annotations

import threading

from astra.store.deferred import DeferredWrites


def test_settle_waits_for_a_write_another_thread_is_running():
    writes = DeferredWrites(inline=False, name="test-deferred")
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_write() -> None:
        started.set()
        release.wait(10)
        done.set()

    writes.submit(slow_write)
    assert started.wait(10)  # the pool's thread is inside the write now
    settled = threading.Event()

    def reader() -> None:
        writes.settle()
        settled.set()

    threading.Thread(target=reader, daemon=True).start()
    assert not settled.wait(0.3)  # it waits: the write is not done
    release.set()
    assert settled.wait(10) and done.is_set()  # and returns only once it is
    assert writes.pending == 0


def test_writes_run_once_in_order_and_a_failure_does_not_stop_the_next():
    writes = DeferredWrites(inline=False, name="test-deferred")
    ran: list[int] = []

    def write(n: int) -> None:
        ran.append(n)
        if n == 1:
            raise ValueError("no")

    for n in range(4):
        writes.submit(write, n)
    writes.settle()
    assert ran == [0, 1, 2, 3] and writes.pending == 0
