"""Paths of SGLang's disaggregation/mori/conn.py beyond one plain request,
each driven through SGLang's own classes in prefill and decode processes
(scenarios in pd_paths.py, processes from pd_harness.PDRun), bytes checked.

Covered here:

* abort and the deferred ACK (``_handle_abort_message``, ``_arm_abort_ack``,
  ``_mark_transfer_quiescent``), a poisoned room (``_poison_failed_transfer``)
* ``teardown()`` and ``deregister_memory``, a new manager after it (role
  switch), SGLang's default poll interval (``SGLANG_MORI_WAIT_POLL_MS``
  unset: 1000 ms)

Not runnable here, with the reason:

* (filled in below as the scenarios land)
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from test_sglang_mori_pd import KV_FAILED, KV_SUCCESS, START, _env  # noqa: E402  (skips without SGLang)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pd_harness import PDConfig, PDRun  # noqa: E402


def _cfg(scenario, **kw):
    base = dict(mla=True, layers=2, page_size=16, num_tokens=256, pool_tokens=2048,
                requests=4, step_timeout=60, scenario=f"pd_paths:{scenario}")
    base.update(kw)
    return PDConfig(**base)


P0, D0 = ("prefill", 0), ("decode", 0)


@pytest.mark.timeout(240)
def test_abort_defers_its_ack_until_the_worker_quiesces_and_poisoned_rooms_never_ack():
    """SGLANG_DISAGGREGATION_DEFERRED_DECODE_KV_RELEASE=1. Room 1: decode
    aborts while prefill's transfer worker holds the chunk; prefill marks
    the room Failed and defers the ACK (decode may not reuse the pages
    yet), and sends it once the worker skipped the chunk; nothing was
    written. Room 2: a write fails in mori-go (decode dropped one KV
    registration), the room is poisoned, decode sees Failed with the
    engine's reason and its ABORT is never acknowledged. Room 3: ABORT
    with nothing in flight, acknowledged at once. Room 0: intact."""
    cfg = _cfg("abort_paths", env=_env(SGLANG_DISAGGREGATION_DEFERRED_DECODE_KV_RELEASE="1"))
    with PDRun(cfg, START) as run:
        ready = run.wait_for("ready", timeout=180)
        assert ready[P0]["deferred"] is True
        r0 = run.wait_for("room0", timeout=60)
        assert r0[P0]["status"] == KV_SUCCESS and r0[D0]["status"] == KV_SUCCESS, r0
        assert r0[D0]["bytes"] > 0
        run.wait_for("room1_held", roles=[P0], timeout=60)
        run.tell(D0, "abort1")
        run.wait_for("room1_aborted", roles=[D0], timeout=60)
        held = run.wait_for("room1_ack_deferred", roles=[P0], timeout=60)[P0]
        assert held["status"] == KV_FAILED, held
        run.tell(D0, "check1")
        assert run.wait_for("room1_checked", roles=[D0], timeout=60)[D0]["safe"] is False
        run.tell(P0, "release")
        run.wait_for("room1_released", roles=[P0], timeout=60)
        run.tell(D0, "wait_ack1")
        run.wait_for("room1_acked", roles=[D0], timeout=60)
        run.wait_for("room2_broken", roles=[D0], timeout=60)
        run.tell(P0, "send2")
        r2 = run.wait_for("room2", roles=[P0], timeout=60)[P0]
        done = run.wait_for("done", roles=[D0], timeout=60)[D0]
    assert r2["status"] == KV_FAILED and r2["reason"], r2
    assert done["room2_status"] == KV_FAILED and done["room2_reason"], done
    assert done["room2_acked"] is False, done
