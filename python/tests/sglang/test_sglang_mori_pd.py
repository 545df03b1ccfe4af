"""SGLang's own mori PD backend, unchanged, over mori-go.

Each test starts real prefill and decode scheduler-side processes (see
pd_harness.py) that run SGLang's MoriKVManager, MoriKVSender,
MoriKVReceiver and bootstrap server from the installed SGLang wheel on
loopback, with `import mori.io` served by the sglang-mori-go wheel.

Needs the SGLang environment (scripts/install-sglang.sh); skipped, and only
skipped, when SGLang is not installed in the interpreter running pytest.
Run with python/tests/sglang/run.sh.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

def _sglang_installed() -> bool:
    # Not find_spec("sglang"): with python/tests on sys.path (pytest run from
    # the repository root) this very directory is a namespace package named
    # "sglang". SGLang proper has sglang.srt.
    try:
        return importlib.util.find_spec("sglang.srt") is not None
    except ModuleNotFoundError:
        return False


if not _sglang_installed():
    pytest.skip(
        "SGLang is not installed in this Python: run scripts/install-sglang.sh "
        "and use build/sglang-venv/bin/python (python/tests/sglang/run.sh does both)",
        allow_module_level=True,
    )

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pd_harness import PDConfig, PDRun  # noqa: E402

KV_SUCCESS = 4  # KVPoll.Success
KV_FAILED = 0  # KVPoll.Failed

# Every role process after the first test is forked from a fork server that
# imported SGLang once; MORI_GO_SGLANG_TEST_START=spawn runs them all with
# spawn (as SGLang does; about 30 s of imports per process).
START = os.environ.get("MORI_GO_SGLANG_TEST_START", "forkserver")


def _env(**extra):
    env = {
        "MORI_GO_BACKEND": "auto",  # RDMA where usable, TCP here
        "MORI_GO_LOG_LEVEL": os.environ.get("MORI_GO_LOG_LEVEL", "warn"),
        "SGLANG_MORI_WAIT_POLL_MS": "50",
    }
    env.update(extra)
    return env


def _run_ok(cfg: PDConfig, start: str = START, timeout: float = 120.0):
    """Run one request through and check both sides ended in Success."""
    with PDRun(cfg, start) as run:
        ready = run.wait_for("ready", timeout=timeout + 60)
        done = run.wait_for("done", timeout=timeout)
    for key, info in done.items():
        assert info["status"] == KV_SUCCESS, f"{key}: {info}"
    prefill0 = ready[("prefill", 0)]
    assert prefill0["mori_go"], f"mori.io did not resolve to mori-go: {prefill0}"
    decodes = [v for k, v in done.items() if k[0] == "decode"]
    for info in decodes:
        assert info["kv_bytes_checked"] > 0
        assert info["aux_bytes_checked"] > 0
    return ready, done


# (a) ------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_mla_pages_and_aux_arrive_byte_for_byte_spawn():
    """DeepSeek-style MLA (576 bf16 per token): every page of every layer and
    the aux row arrive byte for byte, nothing else is written, and KVPoll ends
    in Success on both sides. Processes started with spawn, as SGLang does."""
    cfg = PDConfig(
        mla=True, layers=8, page_size=64, num_tokens=2000, pool_tokens=4096,
        env=_env(),
    )
    _, done = _run_ok(cfg, start="spawn", timeout=240)
    d = done[("decode", 0)]
    # 32 pages of 64 tokens x 1152 bytes, 8 layers
    assert d["kv_bytes_checked"] == 8 * 32 * 64 * 1152
    assert d["kv_entries"] == 8


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "mla,aux_rdma,chunks",
    [
        pytest.param(True, True, 1, id="mla-aux_by_batch_write"),
        pytest.param(False, False, 1, id="mha-aux_by_zmq"),
        pytest.param(False, True, 3, id="mha-chunked_prefill-aux_by_batch_write"),
    ],
)
def test_pages_and_aux_arrive_byte_for_byte(mla, aux_rdma, chunks):
    """MHA (K and V per layer) and MLA; aux over SGLang's ZMQ path or over
    MORI batch_write with one descriptor pair per aux buffer
    (SGLANG_MORI_SEND_AUX_RDMA=1); the request sent in several chunks as
    chunked prefill does."""
    cfg = PDConfig(
        mla=mla, layers=4, page_size=16, num_tokens=1500, pool_tokens=4096,
        aux_rdma=aux_rdma, chunks=chunks, env=_env(),
    )
    _, done = _run_ok(cfg)
    d = done[("decode", 0)]
    assert d["kv_entries"] == (4 if mla else 8)
    assert done[("prefill", 0)]["aux_by_batch_write"] is aux_rdma


@pytest.mark.timeout(240)
def test_concurrent_requests_across_transfer_shards():
    """Six requests in flight at once, each in two chunks: conn.py hands them
    to its transfer workers by room (SGLANG_MORI_TRANSFER_SHARDS threads),
    which call batch_write and wait_all on the one engine concurrently. Every
    request's pages and aux row land in its own place."""
    cfg = PDConfig(
        mla=False, layers=4, page_size=16, num_tokens=600, pool_tokens=8192,
        requests=6, chunks=2, env=_env(SGLANG_MORI_TRANSFER_SHARDS="4"),
    )
    _, done = _run_ok(cfg)
    d = done[("decode", 0)]
    # 6 requests x 38 pages x 16 tokens x 8 heads x 64 x 2 B, K and V, 4 layers
    assert d["kv_bytes_checked"] == 6 * 38 * 16 * 1024 * 8


# (b) ------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "mla,prefill_tp,decode_tp",
    [
        pytest.param(False, 2, 1, id="mha-prefill_tp2-decode_tp1"),
        pytest.param(False, 1, 2, id="mha-prefill_tp1-decode_tp2"),
        pytest.param(True, 2, 1, id="mla-prefill_tp2-decode_tp1"),
        pytest.param(True, 1, 2, id="mla-prefill_tp1-decode_tp2"),
    ],
)
def test_tp_mismatch(mla, prefill_tp, decode_tp):
    """Prefill and decode with different TP sizes. MHA: conn.py cuts every
    page into per-token head slices (one batch_write range per token per
    layer, thousands per call) and each decode rank must end up with exactly
    its heads from the right prefill ranks. MLA: the latent is replicated,
    one prefill rank sends and every decode rank gets all of it."""
    cfg = PDConfig(
        mla=mla, layers=3, page_size=16, num_tokens=700, pool_tokens=2048,
        total_kv_heads=8, head_dim=64, prefill_tp=prefill_tp, decode_tp=decode_tp,
        env=_env(),
    )
    _, done = _run_ok(cfg)
    assert len([k for k in done if k[0] == "decode"]) == decode_tp


# (c) ------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_hybrid_model_state_buffers():
    """A hybrid model's state next to the KV: a MAMBA component (conv and
    temporal state per mamba layer, one slot per request) and a SWA component
    (the sliding-window pages), registered and indexed as SGLang does; the
    request's slot and window pages arrive byte for byte, no other slot or
    page changes."""
    cfg = PDConfig(
        mla=False, layers=2, page_size=16, num_tokens=500, pool_tokens=1024,
        hybrid_state=True, env=_env(),
    )
    _, done = _run_ok(cfg)
    assert done[("decode", 0)]["state_bytes_checked"] > 0


# (d) ------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_decode_killed_mid_transfer_prefill_fails_in_time():
    """The decode process is SIGKILLed after the first chunk of a request went
    out; the remaining writes fail and the prefill reports KVPoll.Failed with
    a reason within its transfer timeout, no hang."""
    transfer_timeout_ms = 5000
    cfg = PDConfig(
        mla=True, layers=8, page_size=64, num_tokens=4000, pool_tokens=8192,
        chunks=2, fault="decode_killed", step_timeout=60,
        env=_env(
            SGLANG_MORI_TRANSFER_TIMEOUT_MS=str(transfer_timeout_ms),
            MORI_GO_TRANSFER_TIMEOUT_MS="3000",
        ),
    )
    with PDRun(cfg, START) as run:
        run.wait_for("ready", timeout=180)
        run.wait_for("first_chunk_sent", roles=[("prefill", 0)], timeout=60)
        run.kill("decode")
        t_kill = time.monotonic()
        run.control.set()  # let prefill send the last chunk
        done = run.wait_for("done", roles=[("prefill", 0)], timeout=60)
        took = time.monotonic() - t_kill
    p = done[("prefill", 0)]
    print(f"prefill failed {took:.2f}s after the kill: {p['reason']}")
    assert p["status"] == KV_FAILED, p
    assert p["reason"], p
    # SLA + one poll interval + process slack
    assert took < transfer_timeout_ms / 1000 + 10, f"prefill took {took:.1f}s to fail"


@pytest.mark.timeout(180)
def test_prefill_killed_decode_fails_in_time():
    """The prefill side (scheduler and bootstrap server) dies after the decode
    sent its metadata; the decode's heartbeat notices and its receiver
    reports KVPoll.Failed instead of waiting for the transfer forever."""
    cfg = PDConfig(
        mla=True, layers=4, page_size=64, num_tokens=1000, pool_tokens=2048,
        chunks=2, fault="decode_killed", step_timeout=60,
        env=_env(
            SGLANG_DISAGGREGATION_HEARTBEAT_INTERVAL="1",
            SGLANG_DISAGGREGATION_HEARTBEAT_MAX_FAILURE="1",
        ),
    )
    with PDRun(cfg, START) as run:
        run.wait_for("ready", timeout=180)
        run.wait_for("first_chunk_sent", roles=[("prefill", 0)], timeout=60)
        run.kill("prefill")
        t_kill = time.monotonic()
        done = run.wait_for("done", roles=[("decode", 0)], timeout=60)
        took = time.monotonic() - t_kill
    d = done[("decode", 0)]
    print(f"decode failed {took:.2f}s after the kill: {d.get('reason')}")
    assert d["status"] == KV_FAILED, d
    assert took < 20, f"decode took {took:.1f}s to fail"


# deployment settings ------------------------------------------------------


@pytest.mark.timeout(240)
def test_shared_secret_and_tcp_backend():
    """MORI_GO_SECRET (engines authenticate each other) and
    MORI_GO_BACKEND=tcp set in each process's environment, as a deployment
    would: the request still arrives byte for byte."""
    cfg = PDConfig(
        mla=True, layers=4, page_size=64, num_tokens=1000, pool_tokens=2048,
        env=_env(MORI_GO_SECRET="pd-demo-secret", MORI_GO_BACKEND="tcp"),
    )
    _, done = _run_ok(cfg)
    assert done[("prefill", 0)].get("backend") == "TCP", done


@pytest.mark.timeout(240)
def test_wrong_secret_fails_both_sides():
    """Decode with a different MORI_GO_SECRET than prefill: the prefill
    cannot register the decode engine, the request fails on both sides
    (KVPoll.Failed with a reason), nothing hangs."""
    cfg = PDConfig(
        mla=True, layers=4, page_size=64, num_tokens=1000, pool_tokens=2048,
        step_timeout=60,
        env=_env(),
        role_env={
            "prefill": {"MORI_GO_SECRET": "secret-a"},
            "decode": {"MORI_GO_SECRET": "secret-b"},
        },
    )
    t0 = time.monotonic()
    with PDRun(cfg, START) as run:
        run.wait_for("ready", timeout=180)
        done = run.wait_for("done", timeout=90)
    took = time.monotonic() - t0
    print(f"wrong secret: {done} in {took:.1f}s")
    for key, info in done.items():
        assert info["status"] == KV_FAILED, f"{key}: {info}"
    assert done[("prefill", 0)]["reason"], done


def _tls_files(d, ca: str, names):
    """A CA named ca and a certificate per name issued by it (openssl, EC
    P-256), as PEM files in d; returns {name: env of that engine}."""
    def sh(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{ca}.key")
    sh("req", "-x509", "-new", "-key", f"{ca}.key", "-subj", f"/CN={ca}", "-days", "1", "-out", f"{ca}.crt")
    out = {}
    for n in names:
        sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{n}.key")
        sh("req", "-new", "-key", f"{n}.key", "-subj", f"/CN={n}", "-out", f"{n}.csr")
        sh("x509", "-req", "-in", f"{n}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
           "-CAcreateserial", "-days", "1", "-out", f"{n}.crt")
        out[n] = {
            "MORI_GO_TLS_CERT": os.path.join(d, f"{n}.crt"),
            "MORI_GO_TLS_KEY": os.path.join(d, f"{n}.key"),
            "MORI_GO_TLS_CA": os.path.join(d, f"{ca}.crt"),
        }
    return out


@pytest.mark.timeout(240)
def test_tls_on_the_data_plane(tmp_path):
    """MORI_GO_TLS_CERT/KEY/CA in each process's environment: the KV moves
    over mutually authenticated TLS 1.3 and arrives byte for byte."""
    files = _tls_files(str(tmp_path), "ca", ["prefill", "decode"])
    cfg = PDConfig(
        mla=True, layers=4, page_size=64, num_tokens=1000, pool_tokens=2048,
        env=_env(MORI_GO_BACKEND="tcp"),
        role_env={"prefill": files["prefill"], "decode": files["decode"]},
    )
    _, done = _run_ok(cfg)
    assert done[("prefill", 0)].get("backend") == "TCP", done


@pytest.mark.timeout(240)
def test_tls_certificate_of_another_ca_fails_both_sides(tmp_path):
    """Decode's certificate comes from another CA: the prefill's data plane
    refuses it in the TLS handshake, the request fails on both sides."""
    good = _tls_files(str(tmp_path), "ca", ["prefill"])
    rogue = _tls_files(str(tmp_path), "rogue", ["decode"])
    cfg = PDConfig(
        mla=True, layers=4, page_size=64, num_tokens=1000, pool_tokens=2048,
        step_timeout=60,
        env=_env(MORI_GO_BACKEND="tcp"),
        role_env={"prefill": good["prefill"], "decode": rogue["decode"]},
    )
    with PDRun(cfg, START) as run:
        run.wait_for("ready", timeout=180)
        done = run.wait_for("done", timeout=90)
    for key, info in done.items():
        assert info["status"] == KV_FAILED, f"{key}: {info}"


# the demo ----------------------------------------------------------------


@pytest.mark.timeout(240)
def test_pd_demo_runs():
    """python/examples/pd_demo.py (the SGLang PD demo) on a smaller request:
    it must run to the end and report a byte-for-byte check."""
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pd_demo.py")
    out = subprocess.run(
        [sys.executable, demo, "--tokens", "1024", "--layers", "8", "--start-method", "forkserver"],
        capture_output=True, text=True, timeout=220,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checked byte for byte on decode: 9437184 B of KV in 8 layers" in out.stdout, out.stdout
