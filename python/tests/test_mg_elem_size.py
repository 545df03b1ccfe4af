"""Element sizes for the byte-plane shuffle of compressed writes (mori-go):
``register_memory(..., elem_size=2)`` and the per-batch override
``batch_write(..., elem_size=...)``; MORI-IO's calls without them are
unchanged."""

from __future__ import annotations

import struct

import pytest
from mg_helpers import Buffer, make_engine

import sglang_mori_go as mg
from sglang_mori_go import MemoryLocationType, StatusCode

N = (1 << 20) + 3  # not a whole number of 2-byte elements


def _bf16_like() -> bytes:
    """Values whose high bytes (sign, exponent) repeat: what the shuffle is for."""
    vals = [((i * 2654435761) >> 9) & 0x7F | (0x3F00 if i % 3 else 0xBF00) for i in range(N // 2)]
    return struct.pack(f"<{len(vals)}H", *vals) + b"\x01"


@pytest.fixture
def zstd_pair():
    a, b = make_engine("elem-ini", compression="zstd"), make_engine("elem-tgt", compression="zstd")
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    yield a, b
    a.close()
    b.close()


def _shuffled(e) -> int:
    return e.stats()["compression"]["shuffled_frames_out"]


def test_register_memory_elem_size_shuffles_writes_from_it(zstd_pair):
    a, b = zstd_pair
    payload = _bf16_like()
    src, plain_src, dst = Buffer(N, payload), Buffer(N, payload), Buffer(N)
    shuffled_mem = a.register_memory(src.addr, N, -1, MemoryLocationType.CPU, elem_size=2)
    plain_mem = a.register_memory(plain_src.addr, N, -1, MemoryLocationType.CPU)  # MORI-IO's call, unchanged
    md = dst.register(b)

    st = a.write(plain_mem, 0, md, 0, N, a.allocate_transfer_uid())
    assert st.Wait() == StatusCode.SUCCESS, st.Message()
    assert dst.bytes() == payload
    assert _shuffled(a) == 0
    frames = a.stats()["compression"]["frames_out"]
    assert frames >= 1

    dst.raw[:N] = b"\0" * N
    st = a.write(shuffled_mem, 0, md, 0, N, a.allocate_transfer_uid())
    assert st.Wait() == StatusCode.SUCCESS, st.Message()
    assert dst.bytes() == payload, "shuffled frames land byte for byte"
    out = a.stats()["compression"]
    assert out["frames_out"] > frames and _shuffled(a) == out["frames_out"] - frames


def test_batch_write_elem_size_overrides_the_registration(zstd_pair):
    a, b = zstd_pair
    payload = _bf16_like()
    src, dst = Buffer(N, payload), Buffer(N)
    ms = a.register_memory(src.addr, N, -1, MemoryLocationType.CPU, elem_size=2)
    md = dst.register(b)
    sts = a.batch_write([ms], [[0]], [md], [[0]], [[N]], [a.allocate_transfer_uid()], elem_size=1)
    assert a.wait_all(sts) == StatusCode.SUCCESS
    assert dst.bytes() == payload
    assert _shuffled(a) == 0, "elem_size=1 turned the shuffle off for the batch"
    session = a.create_session(ms, md)
    assert session is not None
    st = session.batch_write([0], [0], [N], a.allocate_transfer_uid(), elem_size=4)
    assert st.Wait() == StatusCode.SUCCESS, st.Message()
    assert dst.bytes() == payload
    assert _shuffled(a) >= 1


def test_bad_elem_sizes_raise(zstd_pair):
    a, b = zstd_pair
    src, dst = Buffer(4096), Buffer(4096)
    with pytest.raises(mg.InvalidArgsError, match="element size 17"):
        a.register_memory(src.addr, 4096, -1, MemoryLocationType.CPU, elem_size=17)
    with pytest.raises(mg.InvalidArgsError, match="elem_size must be an int"):
        a.register_memory(src.addr, 4096, -1, MemoryLocationType.CPU, elem_size="2")
    ms, md = src.register(a), dst.register(b)
    with pytest.raises(mg.InvalidArgsError, match="element size -1"):
        a.batch_write([ms], [[0]], [md], [[0]], [[16]], [a.allocate_transfer_uid()], elem_size=-1)
    assert a.stats()["regions"] == 1, "the refused registration left nothing behind"
