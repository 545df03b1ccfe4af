"""Process bodies for test_spawn.py (importable by spawned children)."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import random

SIZE = 8 << 20
PAGE = 4096


def pattern(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def pages(seed: int, n: int):
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _engine(key: str):
    from sglang_mori_go import BackendType, IOEngine, IOEngineConfig

    e = IOEngine(key, IOEngineConfig("127.0.0.1", 0))
    e.create_backend(BackendType.RDMA)
    return e


def _mmap(size: int, fill: bytes = b""):
    mm = mmap.mmap(-1, size)
    if fill:
        mm[: len(fill)] = fill
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    return mm, addr


def target(conn, key: str) -> None:
    """Serves commands: ("register", desc bytes), ("inbound", key, uid),
    ("digest",), ("stop",)."""
    from sglang_mori_go import EngineDesc, MemoryLocationType

    e = _engine(key)
    mm, addr = _mmap(SIZE)
    md = e.register_memory(addr, SIZE, -1, MemoryLocationType.CPU)
    conn.send((e.get_engine_desc().pack(), md.pack()))
    while True:
        cmd = conn.recv()
        if cmd[0] == "register":
            e.register_remote_engine(EngineDesc.unpack(cmd[1]))
            conn.send("ok")
        elif cmd[0] == "inbound":
            st = e.pop_inbound_transfer_status(cmd[1], cmd[2])
            conn.send(None if st is None else int(st.Code()))
        elif cmd[0] == "digest":
            conn.send(hashlib.sha256(mm[:]).hexdigest())
        elif cmd[0] == "stop":
            e.close()
            conn.send("bye")
            return


def initiator(conn, key: str, target_desc: bytes, target_mem: bytes, seed: int) -> None:
    """Writes SIZE bytes of pattern(seed) into the target in shuffled pages
    (one batch_write of SIZE/PAGE ranges), reads them back, checks, and
    reports (engine desc, uid, ok, message)."""
    from sglang_mori_go import EngineDesc, MemoryDesc, MemoryLocationType, StatusCode

    try:
        e = _engine(key)
        conn.send(e.get_engine_desc().pack())
        assert conn.recv() == "registered"
        e.register_remote_engine(EngineDesc.unpack(target_desc))
        remote = MemoryDesc.unpack(target_mem)
        data = pattern(seed)
        src, src_addr = _mmap(SIZE, data)
        back, back_addr = _mmap(SIZE)
        ms = e.register_memory(src_addr, SIZE, -1, MemoryLocationType.CPU)
        mb = e.register_memory(back_addr, SIZE, -1, MemoryLocationType.CPU)
        n = SIZE // PAGE
        order = pages(seed, n)
        lo = [i * PAGE for i in range(n)]
        ro = [p * PAGE for p in order]
        uid = e.allocate_transfer_uid()
        sts = e.batch_write([ms], [lo], [remote], [ro], [[PAGE] * n], [uid])
        code = e.wait_all(sts, 60000)
        if code != StatusCode.SUCCESS:
            conn.send((uid, False, f"write: {code} {sts[0].Message()}"))
            return
        sts = e.batch_read([mb], [ro], [remote], [ro], [[PAGE] * n], [e.allocate_transfer_uid()])
        code = e.wait_all(sts, 60000)
        if code != StatusCode.SUCCESS:
            conn.send((uid, False, f"read: {code} {sts[0].Message()}"))
            return
        expect = bytearray(SIZE)
        for i, p in enumerate(order):
            expect[p * PAGE: (p + 1) * PAGE] = data[i * PAGE: (i + 1) * PAGE]
        ok = back[:] == bytes(expect)
        conn.send((uid, ok, "" if ok else "read-back differs"))
        e.close()
    except BaseException as ex:  # noqa: BLE001 - reported to the parent
        conn.send((0, False, f"{type(ex).__name__}: {ex}"))


def expected_target(seed: int) -> str:
    data = pattern(seed)
    n = SIZE // PAGE
    expect = bytearray(SIZE)
    for i, p in enumerate(pages(seed, n)):
        expect[p * PAGE: (p + 1) * PAGE] = data[i * PAGE: (i + 1) * PAGE]
    return hashlib.sha256(bytes(expect)).hexdigest()
