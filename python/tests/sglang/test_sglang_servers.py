"""Real SGLang servers over mori-go: ``launch_server`` prefill and decode with
``--disaggregation-transfer-backend mori`` behind ``sglang-router
--pd-disaggregation``, answering HTTP, against a plain ``launch_server``.

One deployment (plain server, prefill, decode, router: server_deploy.py) is
shared by the tests of this module; starting it costs about a minute of
imports on 2 cores. The model is a tiny Llama with random weights made
locally (server_model.py). Greedy output ids through the router must be the
ones the plain server gives. SGLang runs unchanged; only its CPU kernels are
replaced by a pure-torch stand-in on the servers' PYTHONPATH (standin/).

Needs the SGLang environment with the server requirements
(scripts/install-sglang.sh); run with python/tests/sglang/run.sh.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List

import pytest


def _have(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


if not (_have("sglang.srt") and _have("sglang_router") and _have("uvloop")):
    pytest.skip(
        "SGLang with its server requirements is not installed in this Python: run "
        "scripts/install-sglang.sh and use build/sglang-venv/bin/python (python/tests/sglang/run.sh does both)",
        allow_module_level=True,
    )

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import server_deploy as sd  # noqa: E402
from server_model import ensure_model  # noqa: E402

CHUNK = 1024  # --chunked-prefill-size of every server here
GEN = 12  # greedy tokens per request


@pytest.fixture(scope="module")
def deployment() -> Iterator[Dict[str, object]]:
    model = ensure_model("tiny")
    log_dir = os.environ.get("MORI_GO_SERVER_LOGS") or tempfile.mkdtemp(prefix="mori-go-servers-")
    opts = sd.ServerOptions(model=model, chunked_prefill_size=CHUNK, max_total_tokens=16384,
                            env={"SGLANG_MORI_TRANSFER_TIMEOUT_MS": "30000"})
    plain = sd.plain_server(opts, log_dir)
    # Health checks every second and one failure marks a worker down, so a
    # restarted decode is taken back within seconds.
    pd = sd.pd_deployment(opts, log_dir, "mori", router_args=sd.FAST_RECOVERY_ROUTER_ARGS)
    procs = [plain, *pd.processes()]
    print(f"\nserver logs: {log_dir}")
    try:
        sd.start_all(procs, timeout=420)
        sd.wait_router_workers(pd)
        yield {"plain": plain, "pd": pd, "log_dir": log_dir}
    finally:
        sd.stop_all(procs)


def _prompt(n: int, seed: int) -> List[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 400) for _ in range(n)]


def _same_through_router(dep, prompt: List[int], gen: int = GEN):
    ref = sd.generate(dep["plain"].url, prompt, gen)
    got = sd.generate(dep["pd"].url, prompt, gen)
    assert sd.output_ids(got) == sd.output_ids(ref), f"PD answer differs from the plain server for {len(prompt)} tokens"
    assert len(sd.output_ids(got)) == gen
    return ref, got


@pytest.mark.timeout(900)
def test_short_prompt_same_as_plain_server(deployment):
    _, got = _same_through_router(deployment, _prompt(24, 1))
    assert got["meta_info"]["prompt_tokens"] == 24
    # the KV went through mori-go: both servers' engines run on mori-go
    for p in (deployment["pd"].prefill, deployment["pd"].decode):
        assert "data plane: TCP" in p.log_text(), f"{p.name}: no mori-go engine in the log"


@pytest.mark.timeout(300)
def test_prompt_longer_than_chunked_prefill(deployment):
    n = 2 * CHUNK + 300  # three prefill chunks: three transfers of KV
    _, got = _same_through_router(deployment, _prompt(n, 2))
    assert got["meta_info"]["prompt_tokens"] == n


@pytest.mark.timeout(300)
def test_second_request_reuses_cached_prefix(deployment):
    prefix = _prompt(600, 3)
    _same_through_router(deployment, prefix + _prompt(40, 4))
    _, got = _same_through_router(deployment, prefix + _prompt(50, 5))
    # prefill served the shared prefix from its radix cache: only the new
    # part was computed, and decode still got the whole KV
    assert got["meta_info"]["cached_tokens"] >= 512, got["meta_info"]


@pytest.mark.timeout(300)
def test_eight_concurrent_requests(deployment):
    prompts = [_prompt(100 + 97 * i, 10 + i) for i in range(8)]

    def run_all(url):
        with ThreadPoolExecutor(8) as ex:
            return [sd.output_ids(a) for a in ex.map(lambda p: sd.generate(url, p, GEN), prompts)]

    ref = run_all(deployment["plain"].url)
    got = run_all(deployment["pd"].url)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert g == r, f"request {i} ({len(prompts[i])} tokens) differs"


@pytest.mark.timeout(600)
def test_decode_killed_mid_request_then_restarted(deployment):
    pd = deployment["pd"]
    outcome: Dict[str, object] = {}

    def long_request():
        t0 = time.monotonic()
        try:
            outcome["answer"] = sd.generate(pd.url, _prompt(64, 6), max_new_tokens=100000 // 8, timeout=300)
        except Exception as e:  # noqa: BLE001 - the error is what we check
            outcome["error"] = e
        outcome["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=long_request, daemon=True)
    t.start()
    # the request is decoding once decode's log shows its decode batches
    pd.decode.wait_log("Decode batch", timeout=120, since=pd.decode.log_size())
    time.sleep(1.0)
    pd.decode.kill()
    pd.decode.proc.wait(timeout=30)
    t.join(timeout=120)
    assert not t.is_alive(), "the router did not answer within 120 s of decode dying"
    assert "error" in outcome, f"a request whose decode died got an answer: {str(outcome.get('answer'))[:300]}"
    print(f"request ended {outcome['seconds']:.1f} s after it started: {outcome['error']}")

    # while decode is down a new request fails too, without hanging
    with pytest.raises(Exception):
        sd.generate(pd.url, _prompt(16, 7), 4, timeout=120)

    pd.decode.start()
    pd.decode.wait_ready("/health", 420)
    sd.wait_router_workers(pd, timeout=180)
    _same_through_router(deployment, _prompt(300, 8))
    _same_through_router(deployment, _prompt(CHUNK + 100, 9))
