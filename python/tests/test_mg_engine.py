"""Two engines in one process move bytes; descriptors, configs, batches."""

from __future__ import annotations

import array
import os
import pickle
import random
import threading

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
    PollCqMode,
    RdmaBackendConfig,
    StatusCode,
    TransferStatus,
)


def test_backend_falls_back_to_tcp_and_port_is_set():
    e = IOEngine(unique_key("be"), IOEngineConfig(host="127.0.0.1", port=0))
    try:
        # SGLang passes five positionals.
        cfg = RdmaBackendConfig(1, -1, -1, PollCqMode.POLLING, False)
        assert e.create_backend(BackendType.RDMA, cfg) == BackendType.TCP  # no RDMA device here
        assert e.backend_type == BackendType.TCP
        d = e.get_engine_desc()
        assert d.port > 0
        assert d.key == e.key
        assert d.host == "127.0.0.1"
        assert d.pid == os.getpid()
        assert d.hostname and d.node_id
        # A second create_backend changes nothing.
        assert e.create_backend(BackendType.TCP) == BackendType.TCP
        assert e.stats()["backend"] == "tcp"
    finally:
        e.close()


def test_rdma_config_defaults_match_mori():
    c = RdmaBackendConfig()
    assert (c.qp_per_transfer, c.post_batch_size, c.num_worker_threads, c.poll_cq_mode, c.enable_notification,
            c.notif_per_qp, c.enable_transfer_chunking, c.chunk_bytes, c.max_chunks_per_transfer,
            c.num_nics_per_transfer) == (1, -1, -1, PollCqMode.POLLING, True, 1024, False, 65536, 64, 1)
    c = IOEngineConfig()
    assert (c.host, c.port) == ("", 0)


def test_enum_values():
    assert (BackendType.XGMI, BackendType.RDMA, BackendType.TCP, BackendType.FABRIC) == (1, 2, 3, 4)
    assert (MemoryLocationType.CPU, MemoryLocationType.GPU) == (1, 2)
    assert [int(c) for c in (StatusCode.SUCCESS, StatusCode.INIT, StatusCode.IN_PROGRESS, StatusCode.ERR_INVALID_ARGS,
                             StatusCode.ERR_NOT_FOUND, StatusCode.ERR_RDMA_OP, StatusCode.ERR_BAD_STATE,
                             StatusCode.ERR_GPU_OP)] == [0, 1, 2, 11, 12, 13, 14, 15]
    assert [int(c) for c in (StatusCode.ERR_TIMEOUT, StatusCode.ERR_CONNECTION, StatusCode.ERR_REMOTE,
                             StatusCode.ERR_INTERNAL, StatusCode.ERR_FORKED)] == [16, 17, 18, 19, 20]


def test_descriptors_pack_unpack_equality_pickle(pair):
    a, b = pair
    d = a.get_engine_desc()
    blob = d.pack()
    assert isinstance(blob, bytes)
    d2 = EngineDesc.unpack(blob)
    assert d2 == d and hash(d2) == hash(d) and d2 != b.get_engine_desc()
    assert (d2.key, d2.port, d2.host, d2.pid) == (d.key, d.port, d.host, d.pid)
    assert pickle.loads(pickle.dumps(d)) == d
    buf = Buffer(4096)
    m = buf.register(a)
    try:
        m2 = MemoryDesc.unpack(bytearray(m.pack()))
        assert m2 == m and pickle.loads(pickle.dumps(m)) == m
        assert (m2.engine_key, m2.data, m2.size, m2.loc, m2.device_id) == (a.key, buf.addr, 4096,
                                                                            MemoryLocationType.CPU, -1)
        assert isinstance(m2.id, int) and m2.numa_node == -1 and m2.ipc_handle == bytes(64)
        with pytest.raises(mg.InvalidArgsError):
            EngineDesc.unpack(m.pack())  # a memory descriptor is no engine descriptor
        with pytest.raises(mg.InvalidArgsError):
            MemoryDesc.unpack(b"not a descriptor")
    finally:
        a.deregister_memory(m)
    empty = MemoryDesc()
    assert empty.size == 0 and empty.pack() == b"" and pickle.loads(pickle.dumps(empty)) == empty


def test_write_and_read_single(pair):
    a, b = pair
    payload = os.urandom(1 << 16)
    src, dst = Buffer(1 << 16, payload), Buffer(1 << 16)
    ms, md = src.register(a), dst.register(b)
    md_remote = MemoryDesc.unpack(md.pack())  # as a peer would receive it
    try:
        st = a.write(ms, 100, md_remote, 200, 5000, a.allocate_transfer_uid())
        assert isinstance(st, TransferStatus)
        assert st.Wait() == StatusCode.SUCCESS
        assert st.Succeeded() and not st.Failed() and not st.InProgress() and st.CodeUint32() == 0
        assert dst.bytes()[200:5200] == payload[100:5100]
        assert dst.bytes()[:200] == bytes(200)
        # Read back into another region of src.
        st = a.read(ms, 40000, md_remote, 200, 5000, a.allocate_transfer_uid())
        assert st.WaitFor(10000) == StatusCode.SUCCESS
        assert src.bytes()[40000:45000] == payload[100:5100]
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def _ranges(n: int, size: int, seed: int):
    """n ranges of size bytes: local in order, remote shuffled."""
    rnd = random.Random(seed)
    remote = list(range(n))
    rnd.shuffle(remote)
    lo = [i * size for i in range(n)]
    ro = [r * size for r in remote]
    return lo, ro, [size] * n


@pytest.mark.parametrize("kind", ["list", "array", "numpy"])
def test_batch_write_thousands_of_ranges(pair, kind):
    a, b = pair
    n, size = 4096, 256
    total = n * size
    payload = os.urandom(total)
    src, dst = Buffer(total, payload), Buffer(total)
    ms, md = src.register(a), dst.register(b)
    lo, ro, sz = _ranges(n, size, seed=7)
    if kind == "array":
        lo, ro, sz = (array.array("Q", x) for x in (lo, ro, sz))
    elif kind == "numpy":
        np = pytest.importorskip("numpy")
        lo, ro, sz = np.array(lo, dtype=np.int64), np.array(ro, dtype=np.uint64), np.array(sz)
    try:
        uid = a.allocate_transfer_uid()
        sts = a.batch_write([ms], [lo], [md], [ro], [sz], [uid])
        assert len(sts) == 1
        assert a.wait_all(sts, timeout_ms=30000) == StatusCode.SUCCESS, sts[0].Message()
        got = dst.bytes()
        expect = bytearray(total)
        for i in range(n):
            expect[int(ro[i]): int(ro[i]) + size] = payload[int(lo[i]): int(lo[i]) + size]
        assert got == bytes(expect)
        # And back: batch_read the shuffled ranges into a clean buffer.
        back = Buffer(total)
        mb = back.register(a)
        try:
            sts = a.batch_read([mb], [lo], [md], [ro], [sz], [a.allocate_transfer_uid()])
            assert a.wait_all(sts, 30000) == StatusCode.SUCCESS
            assert back.bytes() == payload
        finally:
            a.deregister_memory(mb)
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_batch_write_several_pairs_one_call(pair):
    """Engine-level multi-pair batch, as SGLang sends aux buffers."""
    a, b = pair
    k, size = 5, 8192
    srcs = [Buffer(size, os.urandom(size)) for _ in range(k)]
    dsts = [Buffer(size) for _ in range(k)]
    ms = [s.register(a) for s in srcs]
    md = [d.register(b) for d in dsts]
    try:
        uids = [a.allocate_transfer_uid() for _ in range(k)]
        sts = a.batch_write(ms, [[0, 4096]] * k, md, [[4096, 0]] * k, [[4096, 4096]] * k, uids)
        assert len(sts) == k
        assert a.wait_all(sts) == StatusCode.SUCCESS
        for s, d in zip(srcs, dsts):
            assert d.bytes() == s.bytes()[4096:] + s.bytes()[:4096]
        for uid in uids:
            st = b.pop_inbound_transfer_status(a.key, uid)
            assert st is not None and st.Succeeded()
    finally:
        for m in ms:
            a.deregister_memory(m)
        for m in md:
            b.deregister_memory(m)


def test_threads_share_one_engine(pair):
    a, b = pair
    threads, per, size = 4, 256, 512
    total = threads * per * size
    payload = os.urandom(total)
    src, dst = Buffer(total, payload), Buffer(total)
    ms, md = src.register(a), dst.register(b)
    errors = []

    def worker(t: int) -> None:
        try:
            base = t * per * size
            offs = array.array("Q", range(base, base + per * size, size))
            for _ in range(3):
                sts = a.batch_write([ms], [offs], [md], [offs], [[size] * per], [a.allocate_transfer_uid()])
                code = a.wait_all(sts, 100)
                while code == StatusCode.IN_PROGRESS:
                    code = a.wait_all(sts, 100)
                assert code == StatusCode.SUCCESS, sts[0].Message()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    try:
        assert not errors, errors
        assert dst.bytes() == payload
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_library_is_loaded_gil_releasing():
    """ctypes.CDLL (not PyDLL) drops the GIL around every foreign call; the
    functional check (a blocked WaitFor while Python threads run) is in
    test_spawn.py."""
    import ctypes

    from sglang_mori_go import _lib

    lib = _lib.lib()
    assert isinstance(lib, ctypes.CDLL) and not isinstance(lib, ctypes.PyDLL)
    assert not lib.mg_status_wait._flags_ & ctypes._FUNCFLAG_PYTHONAPI


def test_environment_is_read_at_engine_creation(monkeypatch):
    """Variables set with os.environ after import still apply (read in
    Python and passed explicitly)."""
    monkeypatch.setenv("MORI_GO_BACKEND", "bogus")
    with pytest.raises(mg.InvalidArgsError, match="MORI_GO_BACKEND"):
        IOEngine(unique_key("env"), IOEngineConfig())
    monkeypatch.setenv("MORI_GO_BACKEND", "tcp")
    monkeypatch.setenv("MORI_GO_LOG_LEVEL", "loud")
    with pytest.raises(mg.InvalidArgsError, match="log level"):
        IOEngine(unique_key("env"), IOEngineConfig())
    monkeypatch.setenv("MORI_GO_LOG_LEVEL", "error")
    monkeypatch.setenv("MORI_GO_TRANSFER_TIMEOUT_MS", "soon")
    with pytest.raises(mg.InvalidArgsError, match="MORI_GO_TRANSFER_TIMEOUT_MS"):
        IOEngine(unique_key("env"), IOEngineConfig())
    monkeypatch.setenv("MORI_GO_TRANSFER_TIMEOUT_MS", "5000")
    monkeypatch.setenv("MORI_GO_TCP_STREAMS", "2")
    monkeypatch.setenv("MORI_RDMA_DEVICES", "mlx5_0")
    # A secret set now: engines with different secrets cannot talk.
    monkeypatch.setenv("MORI_GO_SECRET", "s3cret")
    a = make_engine("sec-a")
    b = make_engine("sec-b")
    monkeypatch.setenv("MORI_GO_SECRET", "other")
    c = make_engine("sec-c")
    try:
        assert a.config.backend is None  # the config object is left as given
        a.register_remote_engine(b.get_engine_desc())  # same secret: fine
        c.register_remote_engine(a.get_engine_desc())  # recorded; the handshake fails in the background
        abuf, cbuf = Buffer(64), Buffer(64)
        am, cm = abuf.register(a), cbuf.register(c)
        st = c.write(cm, 0, am, 0, 64, c.allocate_transfer_uid())
        assert st.Wait() > StatusCode.ERR_BEGIN, st.Message()
    finally:
        for e in (a, b, c):
            e.close()


def test_explicit_config_beats_environment(monkeypatch):
    monkeypatch.setenv("MORI_GO_BACKEND", "bogus")
    e = IOEngine(unique_key("cfg"), IOEngineConfig(host="127.0.0.1", backend="tcp", log_level="error"))
    try:
        assert e.create_backend(BackendType.RDMA) == BackendType.TCP
    finally:
        e.close()
    monkeypatch.setenv("MORI_GO_BACKEND", "rdma")
    e = IOEngine(unique_key("cfg"), IOEngineConfig(host="127.0.0.1"))
    try:
        with pytest.raises(mg.MoriGoError, match="RDMA"):  # rdma required, none here
            e.create_backend(BackendType.RDMA)
    finally:
        e.close()


def test_set_log_level(monkeypatch):
    import logging

    import sglang_mori_go.engine as eng

    monkeypatch.setattr(eng, "_default_log_level", None)
    logger = logging.getLogger("sglang_mori_go")
    monkeypatch.setattr(logger, "level", logger.level)
    mg.set_log_level("trace")
    assert mg.get_log_level() == "debug" and logger.level == logging.DEBUG
    assert IOEngine._config_json("k", IOEngineConfig())["log_level"] == "debug"
    with pytest.raises(mg.InvalidArgsError):
        mg.set_log_level("chatty")


def test_backend_choice_is_logged(caplog):
    import logging

    import sglang_mori_go.engine as eng

    eng._backend_logged = False
    with caplog.at_level(logging.INFO, logger="sglang_mori_go"):
        e1, e2 = make_engine("log1"), make_engine("log2")
    e1.close()
    e2.close()
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "data plane TCP" in r.getMessage()]
    assert len(infos) == 1, [r.getMessage() for r in caplog.records]
    assert "requested RDMA" in infos[0].getMessage()


def test_register_torch_tensor_duck_typed(pair):
    a, _ = pair
    buf = Buffer(1024)

    class Dev:
        type, index = "cpu", None

    class Tensor:
        device = Dev()

        def is_contiguous(self):
            return True

        def data_ptr(self):
            return buf.addr

        def nelement(self):
            return 256

        def element_size(self):
            return 4

    m = a.register_torch_tensor(Tensor())
    assert (m.size, m.data, m.loc, m.device_id) == (1024, buf.addr, MemoryLocationType.CPU, -1)
    a.deregister_memory(m)
    t = Tensor()
    t.is_contiguous = lambda: False
    with pytest.raises(mg.InvalidArgsError, match="contiguous"):
        a.register_torch_tensor(t)


def test_config_json_takes_environment(monkeypatch):
    """What crosses the ABI: every variable, read when the engine is made."""
    import sglang_mori_go.engine as eng

    monkeypatch.setattr(eng, "_default_log_level", None)
    for k, v in {"MORI_GO_BACKEND": "TCP", "MORI_RDMA_DEVICES": "mlx5_0,mlx5_1", "MORI_GO_SECRET": "abc",
                 "MORI_GO_LOG_LEVEL": "INFO", "MORI_GO_TRANSFER_TIMEOUT_MS": "1234", "MORI_GO_TCP_STREAMS": "3",
                 "MORI_GO_TCP_BUSY_POLL_US": "-1", "MORI_GO_TCP_CONGESTION": "cubic", "MORI_GO_GPU": "off",
                 "MORI_NODE_ID": "node-7"}.items():
        monkeypatch.setenv(k, v)
    cfg = IOEngine._config_json("k", IOEngineConfig("10.0.0.1", 5555))
    assert cfg == {"key": "k", "host": "10.0.0.1", "port": 5555, "backend": "tcp", "rdma_devices": "mlx5_0,mlx5_1",
                   "secret": "abc", "gpu": "off", "node_id": "node-7", "log_level": "info",
                   "transfer_timeout_ms": 1234, "tcp": {"streams": 3, "busy_poll_us": -1, "congestion": "cubic"}}
    cfg = IOEngine._config_json("k", IOEngineConfig(secret="x", tcp_streams=1, tcp_busy_poll_us=20, transfer_timeout_ms=9,
                                                    tcp_congestion="reno"))
    assert (cfg["secret"], cfg["tcp"], cfg["transfer_timeout_ms"]) == (
        "x", {"streams": 1, "busy_poll_us": 20, "congestion": "reno"}, 9)
    for k in ("MORI_GO_BACKEND", "MORI_RDMA_DEVICES", "MORI_GO_SECRET", "MORI_GO_LOG_LEVEL",
              "MORI_GO_TRANSFER_TIMEOUT_MS", "MORI_GO_TCP_STREAMS", "MORI_GO_TCP_BUSY_POLL_US",
              "MORI_GO_TCP_CONGESTION", "MORI_GO_GPU", "MORI_NODE_ID"):
        monkeypatch.delenv(k)
    assert IOEngine._config_json("k", IOEngineConfig()) == {"key": "k", "host": "", "port": 0}
    # The node id reaches the descriptor; the engine works as a context manager.
    monkeypatch.setenv("MORI_NODE_ID", "node-x")
    with IOEngine(unique_key("ctx"), IOEngineConfig("127.0.0.1")) as e:
        e.create_backend(BackendType.TCP)
        assert e.get_engine_desc().node_id == "node-x"
    assert e.closed


def test_offsets_from_numpy_arrays_of_every_layout():
    """_u64_array hands the library the address of 8-byte unsigned values
    whatever numpy layout it gets: writable or read-only, int64 or uint64,
    other widths, strided or 2-D; negative values are refused."""
    np = pytest.importorskip("numpy")
    import ctypes

    from sglang_mori_go.engine import _u64_array

    want = [0, 4096, 1 << 40]

    def read_back(arr):
        keep, addr, n = _u64_array(arr, "test")
        assert n == len(want)
        assert list((ctypes.c_uint64 * n).from_address(addr)) == want
        return keep

    plain = np.array(want, dtype=np.uint64)
    assert read_back(plain) is plain, "a contiguous uint64 array is used in place"
    ro = np.array(want, dtype=np.uint64)
    ro.flags.writeable = False
    read_back(ro)  # (a small read-only array is copied: cheaper than numpy's address lookup)
    big = np.arange(5000, dtype=np.uint64)
    big.flags.writeable = False
    keep, addr, n = _u64_array(big, "test")
    assert keep is big and n == 5000 and (ctypes.c_uint64 * 3).from_address(addr + 8 * 4997)[:] == [4997, 4998, 4999]
    signed = np.array(want, dtype=np.int64)
    assert read_back(signed) is signed, "non-negative int64 has the bits of uint64"
    read_back(np.array([[0, 4096], [1 << 40, 7]], dtype=np.uint64).reshape(-1)[:3])
    read_back(np.array([0, 9, 4096, 9, 1 << 40, 9], dtype=np.uint64)[::2])
    read_back(np.array(want, dtype=">u8"))
    small = np.array([0, 4096, 65535], dtype=np.uint16)
    keep, addr, n = _u64_array(small, "test")
    assert list((ctypes.c_uint64 * n).from_address(addr)) == [0, 4096, 65535]
    assert _u64_array(np.array([], dtype=np.uint64), "test")[1:] == (0, 0)
    with pytest.raises(mg.InvalidArgsError, match="non-negative"):
        _u64_array(np.array([1, -1], dtype=np.int64), "test")
    with pytest.raises(mg.InvalidArgsError, match="integers"):
        _u64_array(np.array([1.5]), "test")


def test_compression_setting_crosses_the_abi(monkeypatch):
    """MORI_GO_COMPRESSION is read at engine creation, sent in JSON, and shown in stats()."""
    monkeypatch.setenv("MORI_GO_COMPRESSION", "ZSTD")
    monkeypatch.setenv("MORI_GO_COMPRESS_ELEM_SIZE", "2")
    cfg = IOEngine._config_json("k", IOEngineConfig())
    assert cfg["tcp"] == {"compression": "zstd", "compress_elem_size": 2}
    assert IOEngine._config_json("k", IOEngineConfig(compression="off"))["tcp"]["compression"] == "off"
    monkeypatch.setenv("MORI_GO_COMPRESSION", "lz4")
    with pytest.raises(mg.InvalidArgsError, match="MORI_GO_COMPRESSION"):
        IOEngine._config_json("k", IOEngineConfig())
    monkeypatch.setenv("MORI_GO_COMPRESSION", "zstd")
    a, b = make_engine("zinit"), make_engine("ztarget")
    try:
        a.register_remote_engine(b.get_engine_desc())
        payload = bytes(range(256)) * 4096  # 1 MiB that compresses
        src, dst = Buffer(len(payload), payload), Buffer(len(payload))
        ms, md = src.register(a), dst.register(b)
        st = a.write(ms, 0, md, 0, len(payload), a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS
        assert dst.bytes() == payload
        out, inb = a.stats()["compression"], b.stats()["compression"]
        assert (out["mode"], out["shuffle_elem_size"]) == ("zstd", 2)
        assert out["frames_out"] >= 1 and out["ratio"] < 0.5
        assert inb["frames_in"] == out["frames_out"] and inb["raw_bytes_in"] == len(payload)
    finally:
        a.close()
        b.close()


def test_allocate_transfer_uid_blocks_unique_across_threads():
    """allocate_transfer_uid hands out uids from blocks the library reserves
    (one foreign call per block): from several threads at once, past the end
    of several blocks, every uid is new, and a closed engine still refuses."""
    import threading

    from sglang_mori_go import BadStateError, IOEngine, IOEngineConfig

    e = IOEngine("uid-blocks", IOEngineConfig("127.0.0.1", 0))
    got: list = []
    lock = threading.Lock()

    def take():
        mine = [e.allocate_transfer_uid() for _ in range(1000)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4000 and len(set(got)) == 4000, "a uid was handed out twice"
    assert min(got) > 0
    e.close()
    with pytest.raises(BadStateError):
        e.allocate_transfer_uid()


def test_tcp_congestion_reaches_the_data_plane():
    """tcp_congestion crosses the ABI: with one set the bytes arrive, and
    one the kernel lacks fails create_backend and says so."""
    from sglang_mori_go import InvalidArgsError

    a = make_engine("cc-a", tcp_congestion="reno")
    b = make_engine("cc-b", tcp_congestion="reno")
    try:
        src, dst = Buffer(4096, b"\x07" * 4096), Buffer(4096)
        lmd, rmd = src.register(a), dst.register(b)
        a.register_remote_engine(b.get_engine_desc())
        st = a.write(lmd, 0, rmd, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == src.bytes()
    finally:
        a.close()
        b.close()
    e = IOEngine(unique_key("cc-bad"), IOEngineConfig(host="127.0.0.1", port=0, tcp_congestion="no-such-cc"))
    try:
        with pytest.raises(InvalidArgsError, match='congestion control "no-such-cc" is not in this kernel'):
            e.create_backend(BackendType.TCP)
    finally:
        e.close()
