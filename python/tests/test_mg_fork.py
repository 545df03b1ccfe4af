"""fork() after the library is loaded: every call in the child raises
ForkedProcessError at once, never hangs. Each case runs in a fresh
interpreter under a timeout."""

from __future__ import annotations

from mg_helpers import run_python

PRELUDE = """
import os, sys, ctypes
from sglang_mori_go import (BackendType, IOEngine, IOEngineConfig, ForkedProcessError, MemoryLocationType,
                            EngineDesc, MoriGoError)
def engine(key):
    e = IOEngine(key, IOEngineConfig("127.0.0.1", 0))
    e.create_backend(BackendType.RDMA)
    return e
def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
"""


def test_os_fork_child_raises_forked_process_error():
    r = run_python(PRELUDE + """
e = engine("fork-parent")
buf = ctypes.create_string_buffer(4096)
m = e.register_memory(ctypes.addressof(buf), 4096, -1, MemoryLocationType.CPU)
st = e.write(m, 0, m, 0, 16, e.allocate_transfer_uid())
st.Wait()
pid = os.fork()
if pid == 0:
    code = 0
    checks = [
        lambda: e.get_engine_desc(),
        lambda: e.allocate_transfer_uid(),
        lambda: e.write(m, 0, m, 0, 16, 1),
        lambda: e.wait_all([st]),
        lambda: IOEngine("fork-child", IOEngineConfig()),
        lambda: EngineDesc.unpack(b"x"),
    ]
    for i, check in enumerate(checks):
        try:
            check()
            print("check", i, "did not raise"); code = 1
        except ForkedProcessError as ex:
            if "spawn" not in str(ex) or ex.code != 20:
                print("bad error", ex); code = 1
    # The cached terminal code needs no library call; fresh calls refuse.
    try:
        st.Message()
    except ForkedProcessError:
        pass
    del st, e  # __del__ must not touch the library
    import gc; gc.collect()
    os._exit(code)
print("child exit", wait_child(pid))
print("parent still works", e.allocate_transfer_uid() > 0)
""", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "child exit 0" in r.stdout and "parent still works True" in r.stdout, r.stdout + r.stderr


def test_c_side_refuses_in_forked_child():
    """Bypassing the Python flag, the library itself answers MG_ERR_FORKED
    (20) at once instead of hanging in the Go runtime."""
    r = run_python(PRELUDE + """
e = engine("fork-c")
from sglang_mori_go import _lib
lib = _lib.lib()
pid = os.fork()
if pid == 0:
    uid = ctypes.c_uint64()
    rc = lib.mg_allocate_uid(e._h, ctypes.byref(uid))
    msg = lib.mg_last_error().decode()
    os._exit(0 if rc == 20 and "spawn" in msg else 1)
print("child exit", wait_child(pid))
""", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "child exit 0" in r.stdout, r.stdout + r.stderr


def test_multiprocessing_fork_context_fails_fast():
    r = run_python(PRELUDE + """
import multiprocessing as mp
e = engine("mp-fork")
def body(q):
    try:
        e.get_engine_desc()
        q.put("no error")
    except ForkedProcessError as ex:
        q.put("ForkedProcessError: " + str(ex))
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=body, args=(q,))
    p.start()
    print(q.get(timeout=30))
    p.join(30)
    print("exitcode", p.exitcode)
""", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "ForkedProcessError" in r.stdout and "spawn" in r.stdout and "exitcode 0" in r.stdout, r.stdout


def test_fork_before_loading_is_fine():
    """Importing (even through mori.io) loads nothing: a child forked before
    the first engine can create and use its own."""
    r = run_python(PRELUDE + """
from sglang_mori_go import _lib
assert _lib.loaded() is None, "import must not load the library"
pid = os.fork()
if pid == 0:
    try:
        e = engine("fork-late")
        ok = e.get_engine_desc().port > 0
        e.close()
        os._exit(0 if ok else 1)
    except BaseException as ex:
        print("child failed:", ex)
        os._exit(2)
print("child exit", wait_child(pid))
""", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "child exit 0" in r.stdout, r.stdout + r.stderr
