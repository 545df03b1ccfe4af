"""Engines in spawned processes (as SGLang runs them), and a blocked wait
that releases the GIL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import mg_spawn_workers as w
from mg_helpers import Buffer, make_engine

from sglang_mori_go import EngineDesc, MemoryDesc, StatusCode

CTX = mp.get_context("spawn")
TIMEOUT = 60


def _recv(conn, what):
    if not conn.poll(TIMEOUT):
        raise AssertionError(f"no answer from {what} within {TIMEOUT}s")
    return conn.recv()


def test_two_spawned_processes_move_bytes():
    t_parent, t_child = CTX.Pipe()
    i_parent, i_child = CTX.Pipe()
    target = CTX.Process(target=w.target, args=(t_child, f"sp-target-{os.getpid()}"), daemon=True)
    target.start()
    try:
        tdesc, tmem = _recv(t_parent, "target")
        seed = 1234
        init = CTX.Process(target=w.initiator, args=(i_child, f"sp-init-{os.getpid()}", tdesc, tmem, seed),
                           daemon=True)
        init.start()
        idesc = _recv(i_parent, "initiator")
        t_parent.send(("register", idesc))
        assert _recv(t_parent, "target") == "ok"
        i_parent.send("registered")
        uid, ok, msg = _recv(i_parent, "initiator")
        assert ok, msg
        t_parent.send(("digest",))
        assert _recv(t_parent, "target") == w.expected_target(seed)
        t_parent.send(("inbound", EngineDesc.unpack(idesc).key, uid))
        assert _recv(t_parent, "target") == StatusCode.SUCCESS
        t_parent.send(("stop",))
        assert _recv(t_parent, "target") == "bye"
        init.join(TIMEOUT)
        target.join(TIMEOUT)
        assert init.exitcode == 0 and target.exitcode == 0
    finally:
        for p in (target,):
            if p.is_alive():
                p.kill()


def test_blocked_wait_releases_gil_and_times_out():
    """A transfer to a stopped peer stays IN_PROGRESS: WaitFor(300) returns
    IN_PROGRESS after ~300 ms while other Python threads keep running, and
    the transfer completes once the peer continues."""
    parent, child = CTX.Pipe()
    target = CTX.Process(target=w.target, args=(child, f"stop-target-{os.getpid()}"), daemon=True)
    target.start()
    a = make_engine("stopper")
    try:
        tdesc, tmem = _recv(parent, "target")
        parent.send(("register", a.get_engine_desc().pack()))
        assert _recv(parent, "target") == "ok"
        a.register_remote_engine(EngineDesc.unpack(tdesc))
        remote = MemoryDesc.unpack(tmem)
        src = Buffer(w.SIZE, b"\x5a" * w.SIZE)
        ms = src.register(a)
        os.kill(target.pid, signal.SIGSTOP)
        try:
            st = a.write(ms, 0, remote, 0, w.SIZE, a.allocate_transfer_uid())
            counter = [0]
            result = []

            def waiter():
                t0 = time.monotonic()
                result.append((st.WaitFor(300), time.monotonic() - t0))

            th = threading.Thread(target=waiter)
            th.start()
            while th.is_alive():
                counter[0] += 1
            code, took = result[0]
            assert code == StatusCode.IN_PROGRESS and st.InProgress()
            assert 0.25 <= took < 5, took
            assert counter[0] > 1000  # the main thread ran while the waiter waited
            assert a.wait_all([st], 200) == StatusCode.IN_PROGRESS
        finally:
            os.kill(target.pid, signal.SIGCONT)
        assert st.WaitFor(30000) == StatusCode.SUCCESS, st.Message()
        a.deregister_memory(ms)
        parent.send(("stop",))
        assert _recv(parent, "target") == "bye"
        target.join(TIMEOUT)
    finally:
        a.close()
        if target.is_alive():
            os.kill(target.pid, signal.SIGCONT)
            target.kill()
