"""Inbound statuses, sessions, free-standing statuses, notifications, stats."""

from __future__ import annotations

import os
import time

from mg_helpers import Buffer

from sglang_mori_go import StatusCode, TransferStatus


def test_pop_inbound_both_forms(pair):
    a, b = pair
    src, dst = Buffer(8192, os.urandom(8192)), Buffer(8192)
    ms, md = src.register(a), dst.register(b)
    try:
        uid = a.allocate_transfer_uid()
        assert b.pop_inbound_transfer_status(a.key, uid) is None  # nothing yet
        assert a.write(ms, 0, md, 0, 8192, uid).Wait() == StatusCode.SUCCESS
        # MORI-IO's Python form: a TransferStatus, then None once popped.
        st = b.pop_inbound_transfer_status(a.key, uid)
        assert isinstance(st, TransferStatus) and st.Succeeded() and st.Code() == StatusCode.SUCCESS
        assert b.pop_inbound_transfer_status(a.key, uid) is None
        # MORI-IO's C++ form: fill a status, return a bool.
        uid2 = a.allocate_transfer_uid()
        assert a.read(ms, 0, md, 0, 4096, uid2).Wait() == StatusCode.SUCCESS
        # A read ends on the initiator when its last bytes arrive; the target
        # records the end just after sending them, so for a moment its entry
        # may still say IN_PROGRESS (an unfinished entry stays until popped).
        out = TransferStatus()
        deadline = time.monotonic() + 10
        while True:
            assert b.pop_inbound_transfer_status(a.key, uid2, out) is True
            if not out.InProgress() or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        assert out.Succeeded(), out.Message()
        out2 = TransferStatus()
        assert b.pop_inbound_transfer_status(a.key, uid2, out2) is False
        assert out2.Init()
        assert b.pop_inbound_transfer_status("nobody", 1) is None
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_session(pair):
    a, b = pair
    n = 64 * 1024
    payload = os.urandom(n)
    src, dst = Buffer(n, payload), Buffer(n)
    ms, md = src.register(a), dst.register(b)
    try:
        sess = a.create_session(ms, md)
        assert sess is not None and sess.alive()
        uid = sess.allocate_transfer_uid()
        assert sess.write(0, 0, 1024, uid).Wait() == StatusCode.SUCCESS
        assert dst.bytes()[:1024] == payload[:1024]
        offs = list(range(1024, n, 1024))
        st = sess.batch_write(offs, offs, [1024] * len(offs), sess.allocate_transfer_uid())
        assert isinstance(st, TransferStatus) and st.Wait() == StatusCode.SUCCESS
        assert dst.bytes() == payload
        back = Buffer(n)
        mb = back.register(a)
        sess2 = a.create_session(mb, md)
        assert sess2.read(0, 0, 4096, sess2.allocate_transfer_uid()).Wait() == StatusCode.SUCCESS
        st = sess2.batch_read([4096, 8192], [8192, 4096], [4096, 4096], sess2.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS
        got = back.bytes()
        assert got[:4096] == payload[:4096]
        assert got[4096:8192] == payload[8192:12288] and got[8192:12288] == payload[4096:8192]
        bad = sess.batch_write([0], [n], [1], sess.allocate_transfer_uid())
        assert bad.Wait() == StatusCode.ERR_INVALID_ARGS and bad.Message()
        a.deregister_memory(mb)
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_free_standing_status():
    st = TransferStatus()
    assert st.Init() and st.Code() == StatusCode.INIT and st.Message() == ""
    st.Update(StatusCode.IN_PROGRESS, "running")
    assert st.InProgress() and st.WaitFor(0) == StatusCode.IN_PROGRESS
    st.Update(StatusCode.ERR_RDMA_OP, "boom")
    assert st.Failed() and st.Message() == "boom"
    st.Update(StatusCode.SUCCESS, "late")  # failure wins
    assert st.Code() == StatusCode.ERR_RDMA_OP and st.Message() == "boom"
    st.SetCode(StatusCode.SUCCESS)
    st.SetMessage("ok")
    assert st.Succeeded() and st.CodeUint32() == 0 and st.Message() == "ok"


def test_engine_status_can_be_overridden(pair):
    """SetCode on an engine status detaches it (MORI-IO lets callers do this)."""
    a, b = pair
    src, dst = Buffer(64), Buffer(64)
    ms, md = src.register(a), dst.register(b)
    try:
        st = a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid())
        st.Wait()
        st.SetCode(StatusCode.ERR_BAD_STATE)
        assert st.Failed() and st.Message() == ""
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_notifications_and_stats(pair):
    a, b = pair
    a.notify(b.key, b"hello")
    a.notify(b.key, b"")
    a.notify(b.key, bytes(range(256)) * 4)
    deadline = time.time() + 10
    got = []
    while len(got) < 3 and time.time() < deadline:
        got += b.pop_notifications()
        time.sleep(0.01)
    assert got == [(a.key, b"hello"), (a.key, b""), (a.key, bytes(range(256)) * 4)]
    assert b.pop_notifications() == []
    s = a.stats()
    assert s["key"] == a.key and s["backend"] == "tcp"
    for k in ("in_flight", "regions", "inbound_entries", "handles"):
        assert isinstance(s[k], int)


def test_status_handles_are_released(pair):
    """Statuses free their library handle when collected."""
    import gc

    a, b = pair
    src, dst = Buffer(64), Buffer(64)
    ms, md = src.register(a), dst.register(b)
    try:
        gc.collect()
        before = a.stats()["handles"]
        sts = [a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid()) for _ in range(50)]
        assert a.wait_all(sts) == StatusCode.SUCCESS
        assert a.stats()["handles"] >= before + 50
        del sts
        gc.collect()
        assert a.stats()["handles"] <= before
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_waits_count_the_acknowledgements_they_read(pair):
    """Wait and wait_all, each of which may read its transfer's
    acknowledgement itself (stats() counts those in
    responses_read_by_waiters) or find it read by the engine: the bytes
    arrive intact either way and the count never goes back. Whether a wait
    reads its acknowledgement itself depends on timing and on the threads
    blocked in other waits (at most GOMAXPROCS-1 do), so that it does is
    asserted in Go (transport/tcp TestWaitingThreadsReadTheirOwnResponses),
    not here."""
    a, b = pair
    n = 4096
    payload = os.urandom(n)
    src, dst = Buffer(n, payload), Buffer(n)
    ms, md = src.register(a), dst.register(b)
    try:
        before = a.stats()["responses_read_by_waiters"]
        for i in range(50):
            st = a.write(ms, 0, md, 0, n, a.allocate_transfer_uid())
            if i % 2:
                assert st.Wait() == StatusCode.SUCCESS, st.Message()
            else:
                assert a.wait_all([st]) == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == payload
        after = a.stats()["responses_read_by_waiters"]
        assert isinstance(after, int) and after >= before
        assert b.stats()["responses_read_by_waiters"] == 0  # b only served
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)
