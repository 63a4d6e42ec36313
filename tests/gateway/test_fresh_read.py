"""FreshRead: concurrent callers share one read, and none is ever answered by a read that began
before it arrived (the brand's rate is read per request because it is also the chain liveness check)."""

from __future__ import annotations

import itertools
import threading
import time

from gateway.groupcommit import FreshRead


class SlowRead:
    """Counts its calls; each call blocks until released and returns its own number."""

    def __init__(self):
        self.calls = itertools.count(1)
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.fail = False

    def __call__(self) -> int:
        n = next(self.calls)
        self.started.release()
        self.release.wait(10)
        if self.fail:
            raise ConnectionError(f"read {n} failed")
        return n


def _call_in_threads(read: FreshRead, n: int) -> tuple[list[threading.Thread], list]:
    results: list = []

    def call():
        try:
            results.append(read())
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def _while_one_read_is_out(slow: SlowRead, read: FreshRead, callers: int) -> tuple[list, list]:
    """One caller starts a read; `callers` more arrive while it is out; then it returns. The first
    caller's results and the others'."""
    first, first_results = _call_in_threads(read, 1)
    assert slow.started.acquire(timeout=5)  # read 1 is under way
    later, results = _call_in_threads(read, callers)
    time.sleep(0.2)  # all of them have arrived while read 1 is out
    slow.release.set()
    for t in first + later:
        t.join(10)
    return first_results, results


def test_callers_that_arrive_together_share_one_read():
    """Without FreshRead every request makes its own chain read (50 here)."""
    slow = SlowRead()
    first_results, results = _while_one_read_is_out(slow, FreshRead(slow), 50)
    assert first_results == [1]
    assert results == [2] * 50  # one read for all fifty
    assert next(slow.calls) == 3


def test_a_read_under_way_never_answers_a_caller_that_came_after_it_began():
    """A plain single-flight would hand the late caller read 1, which began before it arrived: a
    chain that went away in between would go unnoticed."""
    slow = SlowRead()
    early_results, late_results = _while_one_read_is_out(slow, FreshRead(slow), 1)
    assert early_results == [1] and late_results == [2]


def test_a_failure_reaches_every_caller_of_that_read_and_is_not_kept():
    slow = SlowRead()
    slow.fail = True
    read = FreshRead(slow)
    _, results = _while_one_read_is_out(slow, read, 5)
    assert len(results) == 5 and all(isinstance(r, ConnectionError) and "read 2" in str(r) for r in results)
    slow.fail = False
    assert read() == 3  # the next caller reads again
