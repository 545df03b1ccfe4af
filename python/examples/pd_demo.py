"""Prefill/decode disaggregation through SGLang's own mori backend, on mori-go.

One DeepSeek-V3-shaped request (61 layers, MLA: 576 bf16 values = 1152 bytes
per token per layer, 8192 tokens, pages of 64 tokens) moves from a prefill
process to a decode process on loopback. Both processes run SGLang's
unchanged ``sglang/srt/disaggregation/mori/conn.py``: ``MoriKVManager``,
``MoriKVSender`` / ``MoriKVReceiver`` and the bootstrap server, with KV
caches allocated by SGLang's ``MLATokenToKVPool`` and aux rows by its
``MetadataBuffers``; ``import mori.io`` is served by the sglang-mori-go wheel.
The decode side then checks every byte it received, and that nothing else in
its cache changed.

    scripts/run-pd-demo.sh             # sets everything up, then runs this
    build/sglang-venv/bin/python python/examples/pd_demo.py [--tokens N]
        [--page-size 64|1] [--layers 61] [--no-verify]
        [--start-method spawn|forkserver]

The processes start with ``spawn``, as SGLang starts its schedulers; each
imports SGLang (torch, transformers, ...), which takes a while on a small
machine. The transfer itself is timed from the first ``send()`` to
``KVPoll.Success`` on the prefill side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The prefill/decode process logic (SGLang's scheduler-side calls) is shared
# with the tests: python/tests/sglang/pd_harness.py.
sys.path.insert(0, os.path.join(HERE, "..", "tests", "sglang"))

from pd_harness import PDConfig, PDRun  # noqa: E402

KV_SUCCESS = 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=61)
    ap.add_argument("--page-size", type=int, default=64, choices=[1, 16, 32, 64])
    ap.add_argument("--no-verify", action="store_true", help="skip the byte-for-byte check")
    ap.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver"])
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    # The decode pool is twice the request, and the request's pages are
    # scattered over both pools, as a page allocator leaves them.
    cfg = PDConfig(
        mla=True,
        layers=args.layers,
        page_size=args.page_size,
        num_tokens=args.tokens,
        pool_tokens=2 * args.tokens + 4 * args.page_size,
        verify=not args.no_verify,
        step_timeout=args.timeout,
        env={
            "MORI_GO_LOG_LEVEL": os.environ.get("MORI_GO_LOG_LEVEL", "warn"),
            "SGLANG_MORI_WAIT_POLL_MS": "5",
        },
    )
    import numpy as np

    from pd_harness import page_maps

    src, dst = page_maps(cfg)
    # conn.py groups runs that are contiguous on both sides into one range;
    # every layer is one batch_write carrying that many ranges.
    ranges = 1 + int(np.count_nonzero((np.diff(src) != 1) | (np.diff(dst) != 1)))
    token_bytes = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2
    kv_bytes = cfg.layers * cfg.num_pages * cfg.page_size * token_bytes
    print(
        f"request: {cfg.num_tokens} tokens, {cfg.layers} layers, MLA "
        f"{cfg.kv_lora_rank + cfg.qk_rope_head_dim} x bf16 = {token_bytes} B/token/layer, "
        f"pages of {cfg.page_size} tokens -> {cfg.num_pages} pages/layer, "
        f"{kv_bytes / 2**20:.1f} MiB of KV; scattered over the pools: {ranges} ranges per layer",
        flush=True,
    )
    print(f"starting prefill and decode processes ({args.start_method}; SGLang imports take a while)...", flush=True)
    t0 = time.monotonic()
    with PDRun(cfg, args.start_method) as run:
        ready = run.wait_for("ready", timeout=args.timeout)
        startup = time.monotonic() - t0
        p_ready = ready[("prefill", 0)]
        print(
            f"ready in {startup:.1f} s: prefill {p_ready['engine_key']}, "
            f"decode {ready[('decode', 0)]['engine_key']}; mori.io is "
            f"{'mori-go' if p_ready.get('mori_go') else 'not mori-go'} ({p_ready.get('mori_module')})",
            flush=True,
        )
        done = run.wait_for("done", timeout=args.timeout)
    p, d = done[("prefill", 0)], done[("decode", 0)]
    if p["status"] != KV_SUCCESS or d["status"] != KV_SUCCESS:
        print(f"FAILED: prefill {p}, decode {d}")
        return 1
    secs = p["seconds"]
    stats = p.get("stats") or {}
    print(f"moved: {cfg.layers} layers x {cfg.num_pages} pages x {cfg.page_size} tokens x {token_bytes} B "
          f"= {kv_bytes} B ({kv_bytes / 2**20:.1f} MiB) of KV + {d['aux_bytes_checked']} B of aux")
    aux_way = "batch_write" if os.environ.get("SGLANG_MORI_SEND_AUX_RDMA", "0") not in ("0", "", "false") else "ZMQ"
    print(f"as {cfg.layers} batch_write calls of {ranges} ranges (one per layer), aux by {aux_way}; "
          f"data plane: {p.get('backend', '?')}; KVPoll: prefill {p['states']} decode {d['states']}")
    print(f"transfer: {secs * 1000:.1f} ms send() -> KVPoll.Success, {kv_bytes / secs / 1e9:.2f} GB/s "
          f"({kv_bytes / secs / 2**30:.2f} GiB/s)")
    if stats:
        print(f"engine stats (prefill): {stats}")
    if cfg.verify:
        print(f"checked byte for byte on decode: {d['kv_bytes_checked']} B of KV in {d['kv_entries']} layers, "
              f"{d['aux_bytes_checked']} B of aux, rest of the cache untouched ({d['verify_s']:.1f} s)")
    else:
        print("not verified (--no-verify)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
