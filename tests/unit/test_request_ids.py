"""Gateway request ids: 128 random bits as 32 hex digits, never repeated, a forked child's own."""

from __future__ import annotations

import os
import re

from extproc.pipeline import exchange


def test_ids_are_hex_and_distinct_across_pool_refills() -> None:
    n = 3 * exchange._POOL_BYTES // 16 + 5  # several refills of the pool
    ids = [exchange.new_request_id() for _ in range(n)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == n


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    exchange.new_request_id()  # the pool holds unused bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, exchange.new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != exchange.new_request_id()
