"""The fast path's pool of read buffers: reuse, and a bound on what it keeps."""

from __future__ import annotations

import threading

from kubectl_relay.engine.blocks import MIN_KEPT, POOL_BYTES, BufferPool, thread_pool


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


def test_clear_lets_every_kept_buffer_go() -> None:
    pool = BufferPool()
    kept = pool.take(8192)
    pool.give(kept)
    pool.clear()
    assert pool.held() == 0
    assert pool.take(8192) is not kept


def test_every_thread_has_a_pool_of_its_own() -> None:
    pools = []
    thread = threading.Thread(target=lambda: pools.append(thread_pool()))
    thread.start()
    thread.join()
    assert pools[0] is not thread_pool()
    assert thread_pool() is thread_pool()
