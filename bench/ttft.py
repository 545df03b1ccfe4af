"""Time to first token: a plain SGLang server against PD disaggregation
(prefill + decode + sglang-router) on mori-go, on Mooncake TCP and on NIXL,
the same model and prompts, requests interleaved across the setups.

    scripts/bench-ttft.sh [--requests 20] [--lengths 1024,8192] [--setups plain,mori,mooncake]

(the script prepares the environment: SGLang's venv, the peers' packages,
the model). All setups run at once; each round sends the same fresh prompt
(random token ids, so no radix-cache hit) to every setup, one request at a
time, in an order that rotates per round, and times the first streamed
token at the client. Before counting, each setup gets warm-up requests
(the first one to a PD setup also connects its transfer engines).

Per setup and length: median and p90 TTFT, the overhead over the plain
server (difference of medians, and median of the per-round differences),
and, for PD setups, where the time goes by SGLang's per-stage request
histograms (``--enable-metrics``: prefill_bootstrap, prefill_forward,
prefill_transfer_kv_cache, decode_bootstrap, decode_transferred,
fake_output) and, for mori-go, the bytes its engines moved (their
``transfer totals`` log lines, MORI_GO_TOTALS_LOG_MS).

Mooncake (mooncake-transfer-engine-non-cuda, TCP) needs one change on a
machine without CUDA, made only in this benchmark's Mooncake servers by
bench/ttft_peers/sitecustomize.py: see that file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python", "tests", "sglang"))

import server_deploy as sd  # noqa: E402
from server_model import SPECS, ensure_model  # noqa: E402

PEERS_DIR = os.path.join(HERE, "ttft_peers")
STAGES = [
    "prefill_bootstrap", "prefill_forward", "chunked_prefill", "prefill_transfer_kv_cache",
    "decode_prepare", "decode_bootstrap", "decode_transferred", "decode_waiting", "fake_output", "request_process",
]


def stream_ttft(url: str, ids: Sequence[int], gen: int, timeout: float = 600) -> Tuple[float, float, List[int]]:
    """POST a streamed greedy /generate; (seconds to the first token,
    seconds to the end, output ids)."""
    host, port = url.split("//", 1)[1].split(":")
    body = json.dumps({
        "input_ids": list(ids), "stream": True,
        "sampling_params": {"temperature": 0, "max_new_tokens": gen, "ignore_eos": True},
    })
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/generate", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            raise sd.ServerError(f"HTTP {r.status} from {url}: {r.read()[:300]!r}")
        first: Optional[float] = None
        out: List[int] = []
        for raw in r:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            msg = json.loads(data)
            if "error" in msg:
                raise sd.ServerError(f"{url}: {msg['error']}")
            if first is None:
                first = time.perf_counter() - t0
            ids_now = msg.get("output_ids") or []
            out = list(ids_now) if len(ids_now) >= len(out) else out + list(ids_now)
        end = time.perf_counter() - t0
        if first is None:
            raise sd.ServerError(f"{url}: stream ended without a token")
        return first, end, out
    finally:
        conn.close()


def scrape_stages(url: str) -> Dict[str, Tuple[float, float]]:
    """stage -> (sum of seconds, count) of sglang:per_stage_req_latency_seconds."""
    conn = http.client.HTTPConnection(*url.split("//", 1)[1].split(":"), timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: Dict[str, List[float]] = {}
    pat = re.compile(r'^sglang:per_stage_req_latency_seconds_(sum|count)\{[^}]*stage="([^"]+)"[^}]*\} ([0-9.eE+-]+)$')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            kind, stage, v = m.group(1), m.group(2), float(m.group(3))
            cur = out.setdefault(stage, [0.0, 0.0])
            cur[0 if kind == "sum" else 1] += v
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_means(before: Dict[str, Tuple[float, float]], after: Dict[str, Tuple[float, float]]) -> Dict[str, float]:
    """Mean milliseconds per observation of each stage between two scrapes."""
    res = {}
    for stage, (s1, c1) in after.items():
        s0, c0 = before.get(stage, (0.0, 0.0))
        if c1 > c0:
            res[stage] = (s1 - s0) / (c1 - c0) * 1000
    return res


def mori_totals(proc: sd.Process) -> Dict[str, int]:
    """The last ``transfer totals`` line of mori-go in a server's log."""
    last: Dict[str, int] = {}
    for line in proc.log_text(proc.log_offset).splitlines():
        if "transfer totals" in line:
            last = {k: int(v) for k, v in re.findall(r"\b(bytes_\w+|transfers_\w+|transfer_ns)=(\d+)", line)}
    return last


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Setup:
    """One deployment under test: its URL and the servers to scrape."""

    def __init__(self, name: str, url_proc: sd.Process, procs: List[sd.Process],
                 pd: Optional[sd.PD] = None) -> None:
        self.name = name
        self.entry = url_proc
        self.procs = procs
        self.pd = pd

    @property
    def url(self) -> str:
        return self.entry.url

    def metric_servers(self) -> List[sd.Process]:
        return [self.pd.prefill, self.pd.decode] if self.pd else [self.entry]


def build_setups(names: Sequence[str], opts: sd.ServerOptions, log_dir: str) -> List[Setup]:
    out = []
    for n in names:
        if n == "plain":
            p = sd.plain_server(opts, log_dir)
            out.append(Setup(n, p, [p]))
            continue
        env = dict(opts.env)
        if n == "mooncake":
            env.update({"MC_FORCE_TCP": "1", "MOONCAKE_PROTOCOL": "tcp"})
        if n in ("mooncake", "nixl"):
            env["PYTHONPATH"] = os.pathsep.join([PEERS_DIR] + [p for p in [os.environ.get("MORI_GO_TTFT_PEERS", "")] if p])
        o = sd.ServerOptions(**{**opts.__dict__, "env": env})
        pd = sd.pd_deployment(o, log_dir, n, prefix=f"pd-{n}")
        out.append(Setup(n, pd.router, pd.processes(), pd))
    return out


def run(args: argparse.Namespace) -> Dict:
    spec = SPECS[args.model]
    model = ensure_model(args.model)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="mori-go-ttft-")
    os.makedirs(log_dir, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]
    opts = sd.ServerOptions(
        model=model, chunked_prefill_size=args.chunk, max_total_tokens=max(lengths) * 2 + 2048,
        max_running_requests=4, log_level="warning",
        extra_args=["--enable-metrics"],
        env={"MORI_GO_TOTALS_LOG_MS": "500", "MORI_GO_LOG_LEVEL": "info"},
    )
    setups = build_setups(args.setups.split(","), opts, log_dir)
    procs = [p for s in setups for p in s.procs]
    print(f"model {model}: {spec.kv_bytes_per_token} B of KV per token; logs in {log_dir}", flush=True)
    result: Dict = {"model": args.model, "kv_bytes_per_token": spec.kv_bytes_per_token, "lengths": {},
                    "requests": args.requests, "gen": args.gen, "chunked_prefill_size": args.chunk,
                    "setups": [s.name for s in setups], "log_dir": log_dir, "meta": machine_meta()}
    with sd.running(procs, timeout=900):
        for s in setups:
            if s.pd:
                sd.wait_router_workers(s.pd, timeout=300)
        rng = random.Random(args.seed)
        for length in lengths:
            vocab = 400
            for s in setups:  # warm-up: not counted
                for _ in range(args.warmup):
                    stream_ttft(s.url, [rng.randrange(3, vocab) for _ in range(length)], args.gen)
            before = {s.name: [scrape_stages(p.url) for p in s.metric_servers()] for s in setups}
            ttft: Dict[str, List[float]] = {s.name: [] for s in setups}
            for i in range(args.requests):
                prompt = [rng.randrange(3, vocab) for _ in range(length)]
                order = setups[i % len(setups):] + setups[:i % len(setups)]
                answers = {}
                for s in order:
                    first, _, out = stream_ttft(s.url, prompt, args.gen)
                    ttft[s.name].append(first * 1000)
                    answers[s.name] = out
                if len({tuple(v) for v in answers.values()}) != 1:
                    print(f"  round {i}: outputs differ between setups: {answers}", flush=True)
                print(f"  {length} tokens, round {i + 1}/{args.requests}: "
                      + ", ".join(f"{n} {v[-1]:.0f} ms" for n, v in ttft.items()), flush=True)
            after = {s.name: [scrape_stages(p.url) for p in s.metric_servers()] for s in setups}
            result["lengths"][str(length)] = summarize(setups, ttft, before, after)
        time.sleep(1.0)  # one more totals log interval
        for s in setups:
            if s.name == "mori" and s.pd:
                result["mori_totals"] = {"prefill": mori_totals(s.pd.prefill), "decode": mori_totals(s.pd.decode)}
    result["meta"]["loadavg_end"] = os.getloadavg()
    result["meta"]["end"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return result


def machine_meta() -> Dict:
    import subprocess

    def out(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
        except OSError:
            return ""

    return {"start": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_start": os.getloadavg(),
            "cpus": os.cpu_count(), "commit": out("git", "rev-parse", "--short", "HEAD"),
            "sglang": out(sys.executable, "-c", "import importlib.metadata as m; print(m.version('sglang'))"),
            "sglang_router": out(sys.executable, "-c",
                                 "import importlib.metadata as m; print(m.version('sglang-router'))")}


def summarize(setups: List[Setup], ttft: Dict[str, List[float]], before, after) -> Dict:
    out: Dict = {}
    plain = ttft.get("plain")
    for s in setups:
        xs = ttft[s.name]
        row = {"median_ms": statistics.median(xs), "p90_ms": pct(xs, 0.9), "n": len(xs), "ttft_ms": xs}
        if plain and s.name != "plain":
            row["overhead_median_ms"] = row["median_ms"] - statistics.median(plain)
            row["overhead_paired_median_ms"] = statistics.median([a - b for a, b in zip(xs, plain)])
            row["overhead_p90_ms"] = row["p90_ms"] - pct(plain, 0.9)
        stages: Dict[str, float] = {}
        for b, a in zip(before[s.name], after[s.name]):
            stages.update(stage_means(b, a))
        row["stages_mean_ms"] = stages
        out[s.name] = row
    return out


def markdown(res: Dict) -> str:
    lines = [f"model `{res['model']}` ({res['kv_bytes_per_token']} B of KV per token), "
             f"{res['requests']} requests per cell, {res['gen']} tokens generated, "
             f"--chunked-prefill-size {res['chunked_prefill_size']}", "",
             "| prompt | setup | median TTFT | p90 | overhead (medians) | overhead (paired median) |",
             "|---|---|---|---|---|---|"]
    for length, rows in res["lengths"].items():
        for name, r in rows.items():
            oh = f"{r['overhead_median_ms']:+.0f} ms" if "overhead_median_ms" in r else "—"
            ohp = f"{r['overhead_paired_median_ms']:+.0f} ms" if "overhead_paired_median_ms" in r else "—"
            lines.append(f"| {length} | {name} | {r['median_ms']:.0f} ms | {r['p90_ms']:.0f} ms | {oh} | {ohp} |")
    lines += ["", "Where the time goes: mean milliseconds per request of each stage SGLang times "
              "(`sglang:per_stage_req_latency_seconds` of each server, from the first to the last counted round):",
              "", "| prompt | setup | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for length, rows in res["lengths"].items():
        for name, r in rows.items():
            st = r["stages_mean_ms"]
            lines.append(f"| {length} | {name} | " + " | ".join(f"{st[k]:.1f}" if k in st else "" for k in STAGES) + " |")
    t = res.get("mori_totals", {}).get("prefill")
    if t:
        line = (f"mori-go's engine in the prefill server, whole run with warm-ups (its `transfer totals` log "
                f"line): {t.get('bytes_written', 0)} B written ({t.get('bytes_written', 0) / 2**30:.2f} GiB) in "
                f"{t.get('transfers_succeeded', 0)} transfers, {t.get('transfers_failed', 0)} failed")
        if t.get("transfer_ns") and t.get("transfers_succeeded"):
            line += f", {t['transfer_ns'] / t['transfers_succeeded'] / 1e6:.1f} ms from submit to end per transfer"
        lines += ["", line + "."]
    return "\n".join(lines)


KEEP_MARKER = "<!-- sections below: written by other commands, kept by bench/run.py -->"
BEGIN = "<!-- ttft: begin (bench/ttft.py; scripts/bench-ttft.sh) -->"
END = "<!-- ttft: end -->"


def write_section(page: str, body: str) -> None:
    """Put ``body`` between this benchmark's markers on ``page``, below
    bench/run.py's keep marker (a full benchmark run keeps it)."""
    with open(page) as f:
        text = f.read()
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        if KEEP_MARKER not in text:
            text = text.rstrip() + "\n\n" + KEEP_MARKER + "\n"
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(page, "w") as f:
        f.write(text)


def section(res: Dict) -> str:
    meta = res.get("meta", {})
    la0, la1 = meta.get("loadavg_start"), meta.get("loadavg_end")
    fmt = lambda la: " ".join(f"{x:.1f}" for x in la) if la else "not recorded"  # noqa: E731
    head = [
        "## Time to first token through SGLang's servers: plain vs PD on mori-go, Mooncake",
        "",
        "Generated by `scripts/bench-ttft.sh` (`bench/ttft.py`; results in `bench/results/ttft.json`).",
        "",
        "```sh",
        "scripts/bench-ttft.sh --requests 20 --lengths 1024,8192 --out bench/results/ttft.json --doc docs/benchmarks.md",
        "```",
        "",
        f"- SGLang {meta.get('sglang', '0.5.23')} `launch_server` (unmodified) and sglang-router "
        f"{meta.get('sglang_router', '0.3.2')} (`--pd-disaggregation`, its default Rust router), all on loopback, "
        f"CPU only: a plain server; prefill + decode + router with `--disaggregation-transfer-backend mori` "
        f"(mori-go, TCP); the same with `mooncake` (mooncake-transfer-engine-non-cuda 0.3.13.post1, "
        f"`MC_FORCE_TCP=1`, one class attribute switched off for CPU: `bench/ttft_peers/sitecustomize.py`). "
        f"NIXL was not run (see below).",
        f"- Model `{res['model']}`: Llama, 4 layers, 8 KV heads x 64, float32, random weights: "
        f"{res['kv_bytes_per_token']} B of KV per token ({res['kv_bytes_per_token'] * 8192 // 2**20} MiB for an "
        f"8192-token prompt). `--chunked-prefill-size {res['chunked_prefill_size']}`, `--sleep-on-idle`, "
        f"`--enable-metrics`; the other flags of `python/tests/sglang/server_deploy.py`.",
        f"- All setups run at once. Each round sends one fresh prompt of random token ids (no radix-cache hit) to "
        f"every setup, one request at a time, in an order rotating per round; {res['requests']} rounds per length "
        f"after {res.get('warmup', 2)} warm-up requests per setup; {res['gen']} tokens generated, streamed; TTFT is "
        f"timed at the client (send to the first streamed chunk). Every round's greedy output ids were compared "
        f"across setups.",
        f"- Machine: {meta.get('cpus', 2)} CPUs shared with about seven other engineers' builds and tests; load "
        f"average (1, 5, 15 min) "
        + (meta["load_note"] if "load_note" in meta else f"{fmt(la0)} at start, {fmt(la1)} at the end")
        + f"; {meta.get('start', '')} to "
        f"{meta.get('end', '')}; mori-go at {meta.get('commit', '?')}. **With a load average around 20 on 2 "
        f"cores every request runs at a fraction of the machine, and the spread between rounds (seconds) is "
        f"larger than the differences between setups: read the per-stage means below, not the TTFT differences.**",
        "",
    ]
    return "\n".join(head) + "\n" + markdown(res) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="plain,mori,mooncake")
    ap.add_argument("--lengths", default="1024,8192")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gen", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=4096, help="--chunked-prefill-size of every server")
    ap.add_argument("--model", default="kv16k", choices=sorted(SPECS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--log-dir")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--doc", help="write the results as a section of this page (docs/benchmarks.md)")
    ap.add_argument("--render", metavar="JSON", help="no run: render the results of an earlier --out")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
    else:
        res = run(args)
        res["warmup"] = args.warmup
    if args.out and not args.render:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    if args.doc:
        write_section(args.doc, section(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
