"""Worker processes of bench/run.py for the systems with a Python API.

    python bench/worker.py target SYSTEM --size BYTES [--conns N]
    python bench/worker.py init   SYSTEM --size BYTES [--conns N]

SYSTEM is ``mori`` (mori-go through its MORI-IO Python API), ``mooncake``
(Mooncake Transfer Engine, protocol tcp) or ``nixl`` (NIXL, UCX backend).
Each worker is its own process (started by run.py with subprocess, never
forked) and speaks the line protocol described in bench/cbench.c on
stdin/stdout. Real stdout is kept private; fd 1 is pointed at stderr so
that native libraries printing to stdout cannot corrupt the protocol.

What is timed, per batch, for every system: from the first call that
starts the transfer to the return of the call that says it is complete.
Argument arrays are prepared beforehand, when the layout is loaded, in the
form each API takes (numpy arrays for mori-go, lists of absolute addresses
for Mooncake, descriptor lists for NIXL).
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
import traceback

import numpy as np

K = np.uint64(0x9E3779B97F4A7C15)

proto_out = None


def reply(s: str) -> None:
    proto_out.write(s + "\n")
    proto_out.flush()


def alloc(size: int, pattern: bool) -> tuple:
    """Anonymous mmap as a numpy byte array, every page touched."""
    m = mmap.mmap(-1, size)
    a = np.frombuffer(m, dtype=np.uint8)
    if pattern:
        w = a[: size - size % 8].view(np.uint64)
        w[:] = np.arange(w.size, dtype=np.uint64) * K + np.uint64(1)
    else:
        a[:] = 0
    addr = a.ctypes.data
    return m, a, addr


def load_layout(path: str) -> list:
    """[(lo, ro, sz) per peer], numpy uint64 arrays."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"MGBL":
        raise ValueError("bad layout file")
    np_ = int.from_bytes(b[4:8], "little")
    off = 8
    peers = []
    for _ in range(np_):
        c = int.from_bytes(b[off:off + 8], "little")
        off += 8
        t = np.frombuffer(b, dtype=np.uint64, count=3 * c, offset=off).reshape(c, 3)
        off += 24 * c
        peers.append((np.ascontiguousarray(t[:, 0]), np.ascontiguousarray(t[:, 1]), np.ascontiguousarray(t[:, 2])))
    return peers


# -- target side ---------------------------------------------------------------


def target_loop(dst: np.ndarray) -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "clear":
                lo, ro, sz = load_layout(parts[1])[int(parts[2])]
                end = int((ro + sz).max()) if len(ro) else 0
                dst[:end] = 0
                reply("ok")
            elif parts[0] == "check":
                lo, ro, sz = load_layout(parts[1])[int(parts[2])]
                n = len(lo)
                bad = None
                for k in range(8 if n else 0):
                    i = n - 1 if k == 7 else k * n // 8
                    l, r, s = int(lo[i]), int(ro[i]), int(sz[i])
                    got = dst[r:r + s].view(np.uint64)
                    want = (np.arange(s // 8, dtype=np.uint64) + np.uint64(l // 8)) * K + np.uint64(1)
                    if not np.array_equal(got, want):
                        bad = f"range lo={l} ro={r} sz={s} wrong"
                        break
                reply("ok" if bad is None else "err " + bad)
            elif parts[0] == "quit":
                return
            else:
                reply("err unknown command")
        except Exception as e:  # report, keep serving
            reply(f"err {type(e).__name__}: {e}")


def target_mori(size: int, conns: int) -> None:
    from sglang_mori_go import BackendType, IOEngine, IOEngineConfig, MemoryLocationType

    m, dst, addr = alloc(size, False)
    eng = IOEngine(f"bench-target-{os.getpid()}", IOEngineConfig("127.0.0.1", 0, tcp_streams=conns or None))
    eng.create_backend(BackendType.TCP)
    md = eng.register_memory(addr, size, -1, MemoryLocationType.CPU)
    reply(f"info {eng.get_engine_desc().pack().hex()},{md.pack().hex()}")
    target_loop(dst)
    eng.close()


def target_mooncake(size: int, conns: int) -> None:
    from mooncake.engine import TransferEngine

    m, dst, addr = alloc(size, False)
    te = TransferEngine()
    if te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
        raise RuntimeError("mooncake initialize failed")
    if te.register_memory(addr, size) != 0:
        raise RuntimeError("mooncake register_memory failed")
    reply(f"info 127.0.0.1:{te.get_rpc_port()},{addr}")
    target_loop(dst)


def nixl_api():
    try:
        from nixl_cu12._api import nixl_agent, nixl_agent_config
    except ImportError:
        from nixl._api import nixl_agent, nixl_agent_config
    return nixl_agent, nixl_agent_config


def target_nixl(size: int, conns: int) -> None:
    nixl_agent, nixl_agent_config = nixl_api()
    m, dst, addr = alloc(size, False)
    ag = nixl_agent(f"bench-target-{os.getpid()}", nixl_agent_config(backends=["UCX"]))
    ag.register_memory(np.array([[addr, size, 0]], dtype=np.uint64), "DRAM")
    reply(f"info {ag.get_agent_metadata().hex()},{addr}")
    target_loop(dst)


# -- initiator side ------------------------------------------------------------


class Initiator:
    """connect(tokens), layout(peers), run(n) -> [seconds]."""

    def __init__(self, size: int, conns: int) -> None:
        self.m, self.src, self.addr = alloc(size, True)
        self.conns = conns
        self.gap = 0.0  # seconds spun before each batch ("run N GAP_US")

    def spin(self) -> None:
        """The caller's own work between two batches ("run N GAP_US"), spun
        before the batch's clock starts."""
        if self.gap:
            end = time.perf_counter() + self.gap
            while time.perf_counter() < end:
                pass

    def serve(self) -> None:
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0] == "connect":
                    self.connect(parts[2:2 + int(parts[1])])
                    reply("ok")
                elif parts[0] == "layout":
                    self.layout(load_layout(parts[1]))
                    reply("ok")
                elif parts[0] == "run":
                    self.gap = int(parts[2]) * 1e-6 if len(parts) > 2 else 0.0
                    lat = self.run(int(parts[1]))
                    reply("ok " + " ".join(f"{x:.9f}" for x in lat))
                elif parts[0] == "quit":
                    return
                else:
                    reply("err unknown command")
            except Exception as e:
                traceback.print_exc()
                reply(f"err {type(e).__name__}: {e}".replace("\n", " "))


class MoriInit(Initiator):
    def __init__(self, size: int, conns: int) -> None:
        super().__init__(size, conns)
        from sglang_mori_go import BackendType, IOEngine, IOEngineConfig, MemoryLocationType, StatusCode

        self.SUCCESS = StatusCode.SUCCESS
        self.eng = IOEngine(f"bench-init-{os.getpid()}", IOEngineConfig("127.0.0.1", 0, tcp_streams=conns or None))
        self.eng.create_backend(BackendType.TCP)
        self.lmd = self.eng.register_memory(self.addr, size, -1, MemoryLocationType.CPU)

    def connect(self, tokens) -> None:
        from sglang_mori_go import EngineDesc, MemoryDesc

        self.rmds = []
        for t in tokens:
            e, md = t.split(",")
            self.eng.register_remote_engine(EngineDesc.unpack(bytes.fromhex(e)))
            self.rmds.append(MemoryDesc.unpack(bytes.fromhex(md)))
        # register_remote_engine connects in the background: wait for every
        # peer (one byte each; targets clear their buffer before each
        # workload) before answering, since the harness may stop this
        # process with SIGSTOP right after.
        for rmd in self.rmds:
            for attempt in range(20):
                st = self.eng.write(self.lmd, 0, rmd, 0, 1, self.eng.allocate_transfer_uid())
                if st.Wait() == self.SUCCESS:
                    break
                time.sleep(0.25)
            else:
                raise RuntimeError(f"no connection to a target: {st.Message()}")

    def layout(self, peers) -> None:
        self.lmds = [self.lmd] * len(peers)
        self.prmds = self.rmds[: len(peers)]
        self.los = [p[0] for p in peers]
        self.ros = [p[1] for p in peers]
        self.szs = [p[2] for p in peers]

    def run(self, n: int) -> list:
        eng, lat, pc = self.eng, [], time.perf_counter
        np_ = len(self.los)
        for _ in range(n):
            self.spin()
            t0 = pc()
            uids = [eng.allocate_transfer_uid() for _ in range(np_)]
            sts = eng.batch_write(self.lmds, self.los, self.prmds, self.ros, self.szs, uids)
            code = eng.wait_all(sts)
            lat.append(pc() - t0)
            if code != self.SUCCESS:
                bad = [s for s in sts if not s.Succeeded()]
                raise RuntimeError(f"transfer failed: {code!r} {bad[0].Message() if bad else ''}")
        return lat


class MooncakeInit(Initiator):
    def __init__(self, size: int, conns: int) -> None:
        super().__init__(size, conns)
        from mooncake.engine import TransferEngine

        self.te = TransferEngine()
        if self.te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
            raise RuntimeError("mooncake initialize failed")
        if self.te.register_memory(self.addr, size) != 0:
            raise RuntimeError("mooncake register_memory failed")

    def connect(self, tokens) -> None:
        self.peers = []
        for t in tokens:
            name, base = t.split(",")
            self.peers.append((name, int(base)))

    def layout(self, peers) -> None:
        a = np.uint64(self.addr)
        self.args = []
        for (name, base), (lo, ro, sz) in zip(self.peers, peers):
            self.args.append((name, (lo + a).tolist(), (ro + np.uint64(base)).tolist(), sz.tolist()))

    def run(self, n: int) -> list:
        te, lat, pc = self.te, [], time.perf_counter
        for _ in range(n):
            self.spin()
            t0 = pc()
            if len(self.args) == 1:
                r = te.batch_transfer_sync_write(*self.args[0])
            else:
                ids = [te.batch_transfer_async_write(*a) for a in self.args]
                r = -1 if any(i == 0 for i in ids) else te.get_batch_transfer_status(ids)
            lat.append(pc() - t0)
            if r != 0:
                raise RuntimeError(f"mooncake transfer returned {r}")
        return lat


class NixlInit(Initiator):
    def __init__(self, size: int, conns: int) -> None:
        super().__init__(size, conns)
        nixl_agent, nixl_agent_config = nixl_api()
        prog = os.environ.get("BENCH_NIXL_INIT_PROGRESS_THREAD", "0") == "1"
        self.ag = nixl_agent(f"bench-init-{os.getpid()}", nixl_agent_config(enable_prog_thread=prog, backends=["UCX"]))
        self.ag.register_memory(np.array([[self.addr, size, 0]], dtype=np.uint64), "DRAM")

    def connect(self, tokens) -> None:
        self.peers = []
        for t in tokens:
            md, base = t.split(",")
            name = self.ag.add_remote_agent(bytes.fromhex(md))
            self.peers.append((name, int(base)))

    def layout(self, peers) -> None:
        self.args = []
        for (name, base), (lo, ro, sz) in zip(self.peers, peers):
            z = np.zeros_like(lo)
            ld = self.ag.get_xfer_descs(np.column_stack([lo + np.uint64(self.addr), sz, z]), "DRAM")
            rd = self.ag.get_xfer_descs(np.column_stack([ro + np.uint64(base), sz, z]), "DRAM")
            self.args.append((ld, rd, name))

    def run(self, n: int) -> list:
        ag, lat, pc = self.ag, [], time.perf_counter
        for _ in range(n):
            self.spin()
            t0 = pc()
            hs = [ag.initialize_xfer("WRITE", ld, rd, name) for ld, rd, name in self.args]
            pending = []
            for h in hs:
                st = ag.transfer(h)
                if st == "ERR":
                    raise RuntimeError("nixl transfer: ERR")
                if st == "PROC":
                    pending.append(h)
            while pending:
                still = []
                for h in pending:
                    st = ag.check_xfer_state(h)
                    if st == "ERR":
                        raise RuntimeError("nixl transfer: ERR")
                    if st == "PROC":
                        still.append(h)
                pending = still
            for h in hs:
                ag.release_xfer_handle(h)
            lat.append(pc() - t0)
        return lat


def main() -> None:
    global proto_out
    proto_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["target", "init"])
    ap.add_argument("system", choices=["mori", "mooncake", "nixl"])
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--conns", type=int, default=0)
    a = ap.parse_args()
    try:
        if a.role == "target":
            {"mori": target_mori, "mooncake": target_mooncake, "nixl": target_nixl}[a.system](a.size, a.conns)
        else:
            {"mori": MoriInit, "mooncake": MooncakeInit, "nixl": NixlInit}[a.system](a.size, a.conns).serve()
    except Exception as e:
        traceback.print_exc()
        reply(f"err {type(e).__name__}: {e}".replace("\n", " "))
        sys.exit(1)


if __name__ == "__main__":
    main()
