"""The fast path's pool of read buffers: reuse, and a bound on what it keeps."""

from __future__ import annotations

import threading

from kubectl_relay.engine.blocks import (
    KEPT_WHEN_SETTLED,
    MIN_KEPT,
    POOL_BYTES,
    BufferPool,
    thread_pool,
)
from kubectl_relay.engine.transfer import INITIAL_BLOCK_SIZE


def test_a_buffer_given_back_is_the_next_one_taken_of_its_size() -> None:
    pool = BufferPool()
    first = pool.take(8192)
    first[:4] = b"kept"
    pool.give(first)
    assert pool.take(8192) is first
    assert pool.take(8192) is not first  # the pool had only that one
    assert len(pool.take(32768)) == 32768  # another size: a fresh buffer


def test_the_pool_keeps_a_bounded_number_of_each_size() -> None:
    pool = BufferPool()
    small, large = 8192, 4 * 1024 * 1024
    for _ in range(POOL_BYTES // small + 50):
        pool.give(memoryview(bytearray(small)))
    for _ in range(MIN_KEPT + 3):
        pool.give(memoryview(bytearray(large)))
    assert pool.held() == POOL_BYTES + MIN_KEPT * large


def test_settling_lets_every_buffer_go_but_two_for_the_next_first_reads() -> None:
    pool = BufferPool()
    first_reads = [pool.take(INITIAL_BLOCK_SIZE) for _ in range(10)]
    larger = [pool.take(size) for size in (65536, 65536, 4 * 1024 * 1024)]
    for buffer in first_reads + larger:
        pool.give(buffer)
    pool.settle()
    assert pool.held() == KEPT_WHEN_SETTLED * INITIAL_BLOCK_SIZE
    again = [pool.take(INITIAL_BLOCK_SIZE) for _ in range(KEPT_WHEN_SETTLED + 1)]
    assert sum(any(b is kept for kept in first_reads) for b in again) == KEPT_WHEN_SETTLED
    fresh = pool.take(65536)
    assert all(fresh is not kept for kept in larger)


def test_every_thread_has_a_pool_of_its_own() -> None:
    pools = []
    thread = threading.Thread(target=lambda: pools.append(thread_pool()))
    thread.start()
    thread.join()
    assert pools[0] is not thread_pool()
    assert thread_pool() is thread_pool()
