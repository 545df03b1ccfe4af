"""What an engine's transfers moved: stats() byte totals, and the
``transfer totals`` log line of MORI_GO_TOTALS_LOG_MS (how ./demo.sh reads
them out of SGLang's server processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mg_helpers import Buffer, child_env, make_engine

from sglang_mori_go import StatusCode


def test_stats_count_bytes_of_successful_transfers():
    a, b = make_engine("tot-a"), make_engine("tot-b")
    try:
        a.register_remote_engine(b.get_engine_desc())
        b.register_remote_engine(a.get_engine_desc())
        src, dst = Buffer(1 << 16, b"x" * (1 << 16)), Buffer(1 << 16)
        ms, md = src.register(a), dst.register(b)
        before = a.stats()
        assert a.write(ms, 0, md, 0, 5000, a.allocate_transfer_uid()).Wait() == StatusCode.SUCCESS
        assert a.read(ms, 0, md, 0, 123, a.allocate_transfer_uid()).Wait() == StatusCode.SUCCESS
        s = a.stats()
        assert s["bytes_written"] - before["bytes_written"] == 5000
        assert s["bytes_read"] - before["bytes_read"] == 123
        assert s["transfers_succeeded"] - before["transfers_succeeded"] == 2
        assert s["transfers_failed"] == before["transfers_failed"]
        assert s["transfer_ns"] > before["transfer_ns"]
        assert b.stats()["bytes_written"] == 0  # the target starts nothing
    finally:
        a.close()
        b.close()


def test_totals_logged_when_asked():
    script = textwrap.dedent(
        """
        import time
        from mg_helpers import Buffer, make_engine
        a, b = make_engine("log-a", totals_log_ms=20), make_engine("log-b")
        a.register_remote_engine(b.get_engine_desc())
        src, dst = Buffer(4096), Buffer(4096)
        ms, md = src.register(a), dst.register(b)
        assert a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid()).Wait() == 0
        time.sleep(0.5)
        a.close(); b.close()
        """
    )
    import os

    env = child_env({"MORI_GO_LOG_LEVEL": "info"})
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__)) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "transfer totals" in ln]
    assert len(lines) == 1, r.stderr  # logged once: the totals changed once
    assert "bytes_written=4096" in lines[0] and "transfers_succeeded=1" in lines[0], lines[0]
