"""A PD-disaggregated SGLang deployment on mori-go, answering HTTP.

Starts, on loopback, SGLang 0.5.23's own servers, unmodified:

* a plain ``python -m sglang.launch_server`` (the reference),
* a prefill and a decode ``launch_server`` with
  ``--disaggregation-transfer-backend mori`` (served by mori-go),
* ``python -m sglang_router.launch_router --pd-disaggregation`` in front,

then sends prompts through the router and to the plain server, prints the
answers (greedy: they must be the same), the time to first token of both,
and the KV bytes mori-go's engine in the prefill server moved (its
``transfer totals`` log line, MORI_GO_TOTALS_LOG_MS). The model is a small
Llama made locally with random weights (no download: the answers are
gibberish, but the same gibberish through both paths). On a CPU-only
machine SGLang needs a pure-torch stand-in for its ``sgl_kernel`` CPU ops
(python/tests/sglang/standin, put on the servers' PYTHONPATH only).

    ./demo.sh                                   # sets everything up, runs this
    build/sglang-venv/bin/python python/examples/pd_servers_demo.py [--model kv16k] [--ttft-requests 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "sglang"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))

import server_deploy as sd  # noqa: E402
from server_model import SPECS, ensure_model  # noqa: E402
from ttft import mori_totals, stream_ttft  # noqa: E402

PROMPTS = [
    "The prefill server computes the KV cache of this prompt,",
    "and mori-go writes it into the decode server, which",
    "generates the answer token by token while the router",
]


def _ask(url: str, text: str, gen: int) -> dict:
    return sd.generate(url, None, gen, text=text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="kv16k", choices=sorted(SPECS))
    ap.add_argument("--ttft-requests", type=int, default=10)
    ap.add_argument("--ttft-tokens", type=int, default=1024)
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--log-dir")
    args = ap.parse_args()

    t0 = time.monotonic()
    spec = SPECS[args.model]
    model = ensure_model(args.model)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="mori-go-demo-")
    opts = sd.ServerOptions(model=model, chunked_prefill_size=4096, max_total_tokens=20480, log_level="warning",
                            env={"MORI_GO_TOTALS_LOG_MS": "250", "MORI_GO_LOG_LEVEL": "info"})
    plain = sd.plain_server(opts, log_dir)
    pd = sd.pd_deployment(opts, log_dir, "mori")
    procs = [plain, *pd.processes()]
    print(f"model: {model} (Llama, {spec.layers} layers, {spec.kv_heads} KV heads x {spec.head_dim}, float32: "
          f"{spec.kv_bytes_per_token} B of KV per token; random weights)")
    print(f"starting 3 SGLang servers and the router (about a minute or two of imports); logs in {log_dir}",
          flush=True)
    with sd.running(procs, timeout=900):
        sd.wait_router_workers(pd, timeout=300)
        print(f"up after {time.monotonic() - t0:.0f} s: plain {plain.url}, router {pd.url} -> "
              f"prefill {pd.prefill.url} (bootstrap port {pd.bootstrap_port}), decode {pd.decode.url}\n")

        time.sleep(0.5)  # the totals log line of the router's first request
        before = mori_totals(pd.prefill).get("bytes_written", 0)
        prompt_tokens = 0
        for text in PROMPTS:
            ref, got = _ask(plain.url, text, args.gen), _ask(pd.url, text, args.gen)
            same = ref["output_ids"] == got["output_ids"]
            prompt_tokens += got["meta_info"]["prompt_tokens"]
            print(f"prompt: {text!r}")
            print(f"  PD on mori-go: {got['text']!r}")
            print(f"  plain server:  {ref['text']!r}  ({'same tokens' if same else 'DIFFERENT tokens'})")
            if not same:
                raise SystemExit("the PD answer differs from the plain server's")

        rng = random.Random(1)
        ttft = {"plain": [], "pd": []}
        for i in range(args.ttft_requests):
            ids = [rng.randrange(3, 400) for _ in range(args.ttft_tokens)]
            prompt_tokens += args.ttft_tokens
            for name, url in (("plain", plain.url), ("pd", pd.url))[:: 1 if i % 2 == 0 else -1]:
                ttft[name].append(stream_ttft(url, ids, 2)[0] * 1000)
        time.sleep(1.0)  # the next totals log line
        moved = mori_totals(pd.prefill)
    kv_moved = moved.get("bytes_written", 0) - before
    mp, md = statistics.median(ttft["plain"]), statistics.median(ttft["pd"])
    print(f"\ntime to first token, {args.ttft_requests} streamed prompts of {args.ttft_tokens} tokens each, "
          f"interleaved: plain server median {mp:.0f} ms, PD through the router on mori-go median {md:.0f} ms "
          f"(+{md - mp:.0f} ms)")
    expect = prompt_tokens * spec.kv_bytes_per_token
    print(f"mori-go (the prefill server's engine) wrote {kv_moved} B ({kv_moved / 2**20:.1f} MiB) into the decode "
          f"server for these prompts: {prompt_tokens} prompt tokens x {spec.kv_bytes_per_token} B of KV = {expect} B "
          f"({'all of it, once' if kv_moved == expect else 'NOT what the prompts hold'}); "
          f"{moved.get('transfers_succeeded', 0)} transfers since start, {moved.get('transfers_failed', 0)} failed")
    print(f"whole run {time.monotonic() - t0:.0f} s; server logs in {log_dir}")


if __name__ == "__main__":
    main()
