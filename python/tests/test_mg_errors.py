"""Failures: typed exceptions for wrong calls, failed statuses with messages
for wrong transfers, and wait_all's failure-wins rule."""

from __future__ import annotations

import os

import pytest
from mg_helpers import Buffer, make_engine, unique_key

import sglang_mori_go as mg
from sglang_mori_go import (
    BackendType,
    EngineDesc,
    IOEngine,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
    StatusCode,
    TransferStatus,
)


@pytest.fixture
def mems(pair):
    a, b = pair
    src, dst = Buffer(1 << 16, os.urandom(1 << 16)), Buffer(1 << 16)
    ms, md = src.register(a), dst.register(b)
    yield a, b, ms, md, src, dst
    for eng, m in ((a, ms), (b, md)):
        try:
            eng.deregister_memory(m)
        except mg.NotFoundError:
            pass


def test_exception_hierarchy():
    assert issubclass(mg.MoriGoError, RuntimeError)
    assert issubclass(mg.InvalidArgsError, ValueError)
    assert issubclass(mg.NotFoundError, LookupError)
    assert issubclass(mg.TransferTimeoutError, TimeoutError) and mg.TimeoutError_ is mg.TransferTimeoutError
    assert issubclass(mg.MoriConnectionError, ConnectionError) and mg.ConnectionError_ is mg.MoriConnectionError
    assert issubclass(mg.UnsupportedError, NotImplementedError)
    for cls, code in ((mg.InvalidArgsError, 11), (mg.NotFoundError, 12), (mg.RdmaOpError, 13),
                      (mg.BadStateError, 14), (mg.GpuOpError, 15), (mg.TransferTimeoutError, 16),
                      (mg.MoriConnectionError, 17), (mg.RemoteError, 18), (mg.InternalError, 19),
                      (mg.ForkedProcessError, 20)):
        assert issubclass(cls, mg.MoriGoError) and cls("x").code == code


def test_bad_range_fails_status_with_message(mems):
    a, _, ms, md, _, _ = mems
    st = a.write(ms, 0, md, (1 << 16) - 10, 100, a.allocate_transfer_uid())
    assert st.Wait() == StatusCode.ERR_INVALID_ARGS
    assert st.Failed() and not st.Succeeded()
    assert "exceeds remote memory" in st.Message()
    st = a.write(ms, (1 << 16) - 1, md, 0, 2, a.allocate_transfer_uid())
    assert st.WaitFor(5000) == StatusCode.ERR_INVALID_ARGS
    assert "range 0" in st.Message() and "local" in st.Message()
    assert "ERR_INVALID_ARGS" in repr(st)


def test_unknown_remote_fails_status(pair):
    a, _ = pair
    stranger = make_engine("stranger")  # never registered with a
    try:
        src, other = Buffer(4096), Buffer(4096)
        ms, mo = src.register(a), other.register(stranger)
        st = a.write(ms, 0, mo, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.ERR_NOT_FOUND
        assert "not registered" in st.Message()
        assert a.create_session(ms, mo) is None
        a.deregister_memory(ms)
    finally:
        stranger.close()


def test_deregistered_local_memory_fails_status(mems):
    a, _, ms, md, _, _ = mems
    a.deregister_memory(ms)
    st = a.write(ms, 0, md, 0, 16, a.allocate_transfer_uid())
    assert st.Wait() == StatusCode.ERR_NOT_FOUND
    assert st.Message()
    a.deregister_memory(ms)  # deregistered already: nothing to do, as in MORI-IO


def test_deregistered_remote_memory_fails_status(mems):
    a, b, ms, md, _, dst = mems
    b.deregister_memory(md)
    st = a.write(ms, 0, md, 0, 1024, a.allocate_transfer_uid())
    code = st.WaitFor(20000)
    assert st.Failed(), (code, st.Message())
    assert st.Message()
    assert dst.bytes()[:1024] == bytes(1024)  # nothing was written


def test_wait_all_failure_wins(mems):
    a, _, ms, md, _, _ = mems
    good = a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid())
    bad = a.write(ms, 0, md, 1 << 20, 16, a.allocate_transfer_uid())
    good2 = a.write(ms, 4096, md, 4096, 4096, a.allocate_transfer_uid())
    assert a.wait_all([good, bad, good2], 10000) == StatusCode.ERR_INVALID_ARGS
    assert a.wait_all([good, good2], 10000) == StatusCode.SUCCESS
    # A free-standing failed status wins too, with no foreign call needed.
    failed = TransferStatus()
    failed.SetCode(StatusCode.ERR_BAD_STATE)
    assert a.wait_all([good, failed], 0) == StatusCode.ERR_BAD_STATE
    # A free-standing status never finishing: IN_PROGRESS, no endless wait.
    assert a.wait_all([good, TransferStatus()], -1) == StatusCode.IN_PROGRESS
    assert a.wait_all([], 0) == StatusCode.SUCCESS
    with pytest.raises(mg.InvalidArgsError):
        a.wait_all([good, "nope"])


def test_wait_all_waits_for_every_status_and_skips_none(mems):
    """MORI-IO's wait_all: with no time limit it returns once every status
    has ended, with the first failure in the order given; None is skipped.
    fail_fast=True is mori-go's own option that returns at the first one."""
    a, _, ms, md, _, _ = mems
    bad = a.write(ms, 0, md, 1 << 20, 16, a.allocate_transfer_uid())
    big = a.write(ms, 0, md, 0, 1 << 16, a.allocate_transfer_uid())
    assert a.wait_all([None, bad, None, big]) == StatusCode.ERR_INVALID_ARGS
    assert big.Code() == StatusCode.SUCCESS  # it had ended before wait_all returned
    later = a.write(ms, 0, md, 0, 1 << 16, a.allocate_transfer_uid())
    assert a.wait_all([later, bad], -1, fail_fast=True) == StatusCode.ERR_INVALID_ARGS
    assert a.wait_all([later], -1) == StatusCode.SUCCESS
    assert a.wait_all([None, None]) == StatusCode.SUCCESS


def test_malformed_batches_raise(mems):
    a, _, ms, md, _, _ = mems
    uid = a.allocate_transfer_uid()
    with pytest.raises(mg.InvalidArgsError, match="one element per transfer"):
        a.batch_write([ms, ms], [[0]], [md], [[0]], [[1]], [uid])
    with pytest.raises(mg.InvalidArgsError, match="must be equal"):
        a.batch_write([ms], [[0, 1]], [md], [[0]], [[1]], [uid])
    with pytest.raises(mg.InvalidArgsError, match="non-negative"):
        a.batch_write([ms], [[-1]], [md], [[0]], [[1]], [uid])
    with pytest.raises(mg.InvalidArgsError, match="integers"):
        a.batch_write([ms], [["x"]], [md], [[0]], [[1]], [uid])
    with pytest.raises(mg.InvalidArgsError, match="MemoryDesc"):
        a.batch_write([b"raw"], [[0]], [md], [[0]], [[1]], [uid])
    with pytest.raises(mg.InvalidArgsError, match="uid"):
        a.batch_write([ms], [[0]], [md], [[0]], [[1]], ["u"])
    with pytest.raises(mg.InvalidArgsError, match=r"uid 0 must be an int in \[0, 2\*\*64\), got -1"):
        a.batch_write([ms], [[0]], [md], [[0]], [[1]], [-1])
    assert a.batch_write([], [], [], [], [], []) == []
    # An empty MemoryDesc is refused by the engine, in the status.
    st = a.write(MemoryDesc(), 0, md, 0, 1, uid)
    assert st.Wait() == StatusCode.ERR_INVALID_ARGS and st.Message()


def test_engine_call_errors(pair):
    a, _ = pair
    e = IOEngine(unique_key("err"), IOEngineConfig(host="127.0.0.1"))
    try:
        with pytest.raises(mg.BadStateError, match="backend"):
            e.register_remote_engine(a.get_engine_desc())  # no backend yet
        with pytest.raises(mg.InvalidArgsError):
            e.create_backend(BackendType.XGMI)
        e.remove_backend(BackendType.RDMA)  # none running: nothing to do
        with pytest.raises(mg.InvalidArgsError):
            e.create_backend(BackendType.RDMA, mg.RdmaBackendConfig(qp_per_transfer=0))
        e.create_backend(BackendType.RDMA)
        e.deregister_remote_engine(a.get_engine_desc())  # never registered: nothing to do, as in MORI-IO
        with pytest.raises(mg.InvalidArgsError):
            e.register_remote_engine(EngineDesc())
        with pytest.raises(mg.InvalidArgsError):
            e.register_memory(0, 10, -1, MemoryLocationType.CPU)
        with pytest.raises(mg.InvalidArgsError):
            e.register_memory(4096, 0, -1, MemoryLocationType.CPU)
    finally:
        e.close()
    e.close()  # idempotent
    with pytest.raises(mg.BadStateError, match="closed"):
        e.get_engine_desc()
    with pytest.raises(mg.InvalidArgsError):
        IOEngine("", IOEngineConfig())
    with pytest.raises(mg.InvalidArgsError, match="key"):
        IOEngine("k" * 10000, IOEngineConfig())


def test_unreachable_remote_fails_the_transfer_not_the_registration(pair):
    """As MORI-IO: register_remote_engine records the peer and returns; the
    connection is made in the background, and a peer that cannot be reached
    fails the transfers to it, with a typed code and its key."""
    gone = make_engine("gone")
    gbuf = Buffer(4096)
    gmem = gbuf.register(gone)
    desc = gone.get_engine_desc()
    gone.close()
    e = IOEngine(unique_key("hs"), IOEngineConfig(host="127.0.0.1", handshake_timeout_ms=1500))
    try:
        e.create_backend(BackendType.TCP)
        e.register_remote_engine(desc)
        src = Buffer(4096)
        ms = src.register(e)
        st = e.write(ms, 0, gmem, 0, 16, e.allocate_transfer_uid())
        assert st.Wait() in (StatusCode.ERR_CONNECTION, StatusCode.ERR_TIMEOUT), st.Message()
        assert desc.key in st.Message()
    finally:
        e.close()


def test_statuses_outlive_their_engine(pair):
    a, b = pair
    e = make_engine("short")
    src = Buffer(64)
    ms = src.register(e)
    st = e.write(ms, 0, ms, 0, 8, e.allocate_transfer_uid())  # to itself: not registered
    e.close()
    assert st.Wait() in (StatusCode.ERR_NOT_FOUND, StatusCode.ERR_BAD_STATE)
    assert st.Message()
