"""Memory tokens and TLS through the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from mg_helpers import Buffer, make_engine

import sglang_mori_go as mg
from sglang_mori_go import IOEngine, IOEngineConfig, MemoryDesc, StatusCode


def _token(m: MemoryDesc) -> bytes:
    """The token inside a packed memory descriptor (version 2: magic,
    version, key length u16, key, id u32, token [16])."""
    blob = m.pack()
    n = int.from_bytes(blob[4:6], "little")
    off = 6 + n + 4
    return blob[off:off + 16]


def test_token_never_shown(pair):
    a, b = pair
    buf = Buffer(4096)
    m = buf.register(b)
    try:
        tok = _token(m)
        assert len(tok) == 16 and tok != bytes(16)
        shown = [repr(m), str(m), json.dumps(m._info), json.dumps(b.stats())]
        shown += [repr(getattr(m, k)) for k in dir(m) if not k.startswith("_") and not callable(getattr(m, k))]
        for s in shown:
            assert tok.hex() not in s and tok.hex().upper() not in s and repr(tok) not in s
        assert not hasattr(m, "token")
    finally:
        b.deregister_memory(m)


def test_forged_descriptor_refused_and_counted(pair):
    """A descriptor whose token is changed: refused, not a byte moved,
    counted in the target's stats."""
    a, b = pair
    src, dst = Buffer(4096, b"\x41" * 4096), Buffer(4096, b"\x07" * 4096)
    ms, md = src.register(a), dst.register(b)
    try:
        blob = bytearray(md.pack())
        n = int.from_bytes(blob[4:6], "little")
        blob[6 + n + 4] ^= 1
        forged = MemoryDesc.unpack(bytes(blob))
        st = a.write(ms, 0, forged, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() != StatusCode.SUCCESS
        assert "access denied" in st.Message()
        assert dst.bytes() == b"\x07" * 4096
        assert b.stats()["access_denied"] == 1
    finally:
        a.deregister_memory(ms)
        b.deregister_memory(md)


def test_tls_config_from_environment(monkeypatch):
    for k, v in {"MORI_GO_TLS_CERT": "/c.pem", "MORI_GO_TLS_KEY": "/k.pem", "MORI_GO_TLS_CA": "/ca.pem"}.items():
        monkeypatch.setenv(k, v)
    cfg = IOEngine._config_json("k", IOEngineConfig())
    assert cfg["tls"] == {"cert": "/c.pem", "key": "/k.pem", "ca": "/ca.pem"}
    cfg = IOEngine._config_json("k", IOEngineConfig(tls_ca="/other.pem"))
    assert cfg["tls"]["ca"] == "/other.pem"
    monkeypatch.setenv("MORI_GO_TLS_KEY", "")
    monkeypatch.delenv("MORI_GO_TLS_CERT")
    with pytest.raises(mg.InvalidArgsError, match="all required"):
        IOEngine("half-tls", IOEngineConfig())


def _certs(d: str, ca: str, names):
    def sh(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{ca}.key")
    sh("req", "-x509", "-new", "-key", f"{ca}.key", "-subj", f"/CN={ca}", "-days", "1", "-out", f"{ca}.crt")
    out = {}
    for n in names:
        sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{n}.key")
        sh("req", "-new", "-key", f"{n}.key", "-subj", f"/CN={n}", "-out", f"{n}.csr")
        sh("x509", "-req", "-in", f"{n}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
           "-days", "1", "-out", f"{n}.crt")
        out[n] = dict(tls_cert=os.path.join(d, f"{n}.crt"), tls_key=os.path.join(d, f"{n}.key"),
                      tls_ca=os.path.join(d, f"{ca}.crt"))
    return out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_engines_move_bytes_and_refuse_another_ca(tmp_path):
    good = _certs(str(tmp_path), "ca", ["a", "b"])
    rogue = _certs(str(tmp_path), "rogue", ["m"])
    a, b, m = make_engine("tls-a", **good["a"]), make_engine("tls-b", **good["b"]), make_engine("tls-m", **rogue["m"])
    try:
        a.register_remote_engine(b.get_engine_desc())
        payload = os.urandom(1 << 20)
        src, dst = Buffer(1 << 20, payload), Buffer(1 << 20)
        ms, md = src.register(a), dst.register(b)
        st = a.write(ms, 0, md, 0, 1 << 20, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == payload
        # Registration returns at once (as MORI-IO) and connects in the
        # background: the refused TLS handshake fails m's transfers, and b
        # counts the refusal once m's connections have reached it.
        m.register_remote_engine(b.get_engine_desc())
        mbuf = Buffer(64, os.urandom(64))
        mm = mbuf.register(m)
        deadline = time.monotonic() + 10
        while True:
            st = m.write(mm, 0, md, 0, 64, m.allocate_transfer_uid())
            assert st.Wait() > StatusCode.ERR_BEGIN, st.Message()
            if b.stats()["streams_refused"] > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert b.stats()["streams_refused"] > 0, st.Message()
        assert dst.bytes() == payload
    finally:
        for e in (a, b, m):
            e.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_control_plane_notify_and_mismatch(tmp_path):
    """With TLS the control plane runs over TLS too: engines of one CA
    register and notify each other and move bytes; an engine without TLS
    and a TLS engine fail, both ways round, with a TLS mismatch error."""
    good = _certs(str(tmp_path), "ca", ["a", "b"])
    a, b, p = make_engine("tlsctl-a", **good["a"]), make_engine("tlsctl-b", **good["b"]), make_engine("plain")
    try:
        a.register_remote_engine(b.get_engine_desc())
        b.register_remote_engine(a.get_engine_desc())
        a.notify(b.key, b"kv ready")
        b.notify(a.key, b"done")
        assert b.pop_notifications() == [(a.key, b"kv ready")]
        assert a.pop_notifications() == [(b.key, b"done")]
        payload = os.urandom(4096)
        src, dst = Buffer(4096, payload), Buffer(4096)
        ms, md = src.register(a), dst.register(b)
        st = a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid())
        assert st.Wait() == StatusCode.SUCCESS, st.Message()
        assert dst.bytes() == payload

        # A TLS engine calling one without TLS.
        b.register_remote_engine(p.get_engine_desc())
        with pytest.raises(mg.MoriConnectionError, match="TLS mismatch: the peer does not speak TLS"):
            b.notify(p.key, b"x")
        # An engine without TLS calling a TLS engine: its transfer fails.
        p.register_remote_engine(b.get_engine_desc())
        pbuf = Buffer(64, os.urandom(64))
        st = p.write(pbuf.register(p), 0, md, 0, 64, p.allocate_transfer_uid())
        assert st.Wait() > StatusCode.ERR_BEGIN
        assert "TLS mismatch" in st.Message() and "speaks TLS on its control plane" in st.Message()
        assert b.pop_notifications() == [] and p.pop_notifications() == []
        assert dst.bytes() == payload
    finally:
        for e in (a, b, p):
            e.close()
