"""MORI-IO's environment, as mori-go treats it: MORI_IO_* tuning variables
honoured where they mean something, a warning once for the rest; RDMA that
is asked for but unusable is a WARN and visible in stats(), and a device the
user named that is not usable is refused."""

from __future__ import annotations

import logging

import pytest
from mg_helpers import unique_key

import sglang_mori_go as mg
from sglang_mori_go import BackendType, IOEngine, IOEngineConfig, RdmaBackendConfig
from sglang_mori_go import _moriio_env


def test_honoured_variables_override_the_config():
    cfg = RdmaBackendConfig(qp_per_transfer=1).to_json_dict()
    env = {"MORI_IO_QP_PER_TRANSFER": "4", "MORI_IO_POST_BATCH_SIZE": "-1", "MORI_IO_POLL_CQ_MODE": "event",
           "MORI_IO_ENABLE_NOTIFICATION": "0", "MORI_IO_NUM_WORKER_THREADS": " "}
    out = _moriio_env.apply(cfg, env)
    assert out["qp_per_transfer"] == 4
    assert out["post_batch_size"] == -1
    assert out["poll_cq_mode"] == 1
    assert out["enable_notification"] is False
    assert out["num_worker_threads"] == cfg["num_worker_threads"]  # blank: not set
    with pytest.raises(mg.InvalidArgsError, match="MORI_IO_QP_PER_TRANSFER='many'"):
        _moriio_env.apply(cfg, {"MORI_IO_QP_PER_TRANSFER": "many"})
    with pytest.raises(mg.InvalidArgsError, match="MORI_IO_POLL_CQ_MODE"):
        _moriio_env.apply(cfg, {"MORI_IO_POLL_CQ_MODE": "sometimes"})


def test_unused_variables_are_named_once(monkeypatch):
    monkeypatch.setattr(_moriio_env, "_warned", False)
    env = {"MORI_IO_ENABLE_CHUNKING": "1", "MORI_IO_QP_MAX_SEND_WR": "4096", "MORI_IO_TC": "104",
           "MORI_IO_QP_PER_TRANSFER": "2", "OTHER": "x"}
    assert _moriio_env.unused(env) == ["MORI_IO_ENABLE_CHUNKING", "MORI_IO_QP_MAX_SEND_WR"]
    said = []
    assert _moriio_env.warn_unused(env, lambda fmt, *a: said.append(fmt % a))
    assert not _moriio_env.warn_unused(env, lambda fmt, *a: said.append(fmt % a)), "once per process"
    assert len(said) == 1 and "MORI_IO_ENABLE_CHUNKING, MORI_IO_QP_MAX_SEND_WR" in said[0]


def test_rdma_unusable_is_a_warning_with_its_reason_in_stats(monkeypatch, caplog):
    monkeypatch.delenv("MORI_RDMA_DEVICES", raising=False)
    monkeypatch.delenv("MORI_GO_BACKEND", raising=False)
    e = IOEngine(unique_key("fb"), IOEngineConfig(host="127.0.0.1"))
    try:
        with caplog.at_level(logging.WARNING, logger="sglang_mori_go"):
            assert e.create_backend(BackendType.RDMA) == BackendType.TCP  # no RDMA device on this machine
        reason = e.stats()["rdma_fallback"]
        assert reason, "stats() says why"
        assert any("RDMA requested" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    finally:
        e.close()


def test_a_named_device_that_is_unusable_is_refused(monkeypatch):
    monkeypatch.setenv("MORI_RDMA_DEVICES", "mlx5_nonexistent")
    monkeypatch.delenv("MORI_GO_BACKEND", raising=False)
    e = IOEngine(unique_key("named"), IOEngineConfig(host="127.0.0.1"))
    try:
        with pytest.raises(mg.MoriGoError, match="mlx5_nonexistent.*not usable"):
            e.create_backend(BackendType.RDMA)
    finally:
        e.close()
