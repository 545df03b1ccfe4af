"""register_remote_engine as SGLang's mori backend uses it: prefill registers
every decode on one bootstrap thread, each decode registers once. One decode
that hangs must not stall the others' registrations or transfers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from mg_helpers import Buffer, child_env, make_engine, unique_key

from sglang_mori_go import BackendType, EngineDesc, IOEngine, IOEngineConfig, StatusCode

HUNG_DECODE = """
    import sys, time
    from sglang_mori_go import IOEngine, IOEngineConfig, BackendType
    e = IOEngine(sys.argv[1], IOEngineConfig(host="127.0.0.1"))
    e.create_backend(BackendType.TCP)
    sys.stdout.write(e.get_engine_desc().pack().hex() + "\\n")
    sys.stdout.flush()
    time.sleep(600)
"""


def test_a_hung_decode_does_not_stall_other_registrations():
    # A decode that is up, then stopped (SIGSTOP): its sockets still accept
    # connections, but nothing answers the handshake.
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HUNG_DECODE), unique_key("decode-hung")],
                             stdout=subprocess.PIPE, text=True, env=child_env())
    prefill = decode = None
    try:
        hung = EngineDesc.unpack(bytes.fromhex(child.stdout.readline().strip()))
        os.kill(child.pid, signal.SIGSTOP)
        # A handshake timeout of an hour: a registration that waited for the
        # hung decode would not return within this test's life.
        prefill = IOEngine(unique_key("prefill"), IOEngineConfig(host="127.0.0.1", handshake_timeout_ms=3_600_000))
        prefill.create_backend(BackendType.TCP)
        decode = make_engine("decode-live")
        prefill.register_remote_engine(hung)  # the bootstrap thread moves on at once
        prefill.register_remote_engine(decode.get_engine_desc())
        decode.register_remote_engine(prefill.get_engine_desc())

        src, dst = Buffer(1 << 16, os.urandom(1 << 16)), Buffer(1 << 16)
        ms, md = src.register(prefill), dst.register(decode)
        st = prefill.write(ms, 0, md, 0, 1 << 16, prefill.allocate_transfer_uid())
        assert prefill.wait_all([st], 30_000) == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == src.bytes()
        prefill.deregister_remote_engine(hung)
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()
        for e in (prefill, decode):
            if e is not None:
                e.close()


def test_remove_backend_then_create_again():
    a, b = make_engine("rm-a"), make_engine("rm-b")
    try:
        a.register_remote_engine(b.get_engine_desc())
        src, dst = Buffer(4096, os.urandom(4096)), Buffer(4096)
        ms, md = src.register(a), dst.register(b)
        assert a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid()).Wait() == StatusCode.SUCCESS
        a.remove_backend(BackendType.TCP)
        st = a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.ERR_BAD_STATE and "backend" in st.Message()
        a.remove_backend(BackendType.TCP)  # none running any more: nothing to do
        a.create_backend(BackendType.TCP)
        src2 = Buffer(4096, os.urandom(4096))
        ms2 = src2.register(a)
        st = a.write(ms2, 0, md, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == src2.bytes()
    finally:
        a.close()
        b.close()
