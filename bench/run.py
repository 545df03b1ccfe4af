#!/usr/bin/env python3
"""mori-go against what one would use instead, same machine, same run.

    python bench/run.py            the full run (writes docs/benchmarks.md, docs/img/*.png)
    python bench/run.py --smoke    a short CI run (mori-go, raw sockets, memcpy; no page)

Use scripts/bench.sh / scripts/bench-smoke.sh: they build what is needed and
set up the pinned virtual environment under build/bench-venv.

Systems (each an initiator process plus one process per target engine,
started with subprocess, none forked from another):

    memcpy    the same ranges copied in one process with memcpy (a bound)
    raw       the same bytes over plain TCP sockets (bench/cbench.c): the
              baseline no TCP engine can beat
    mori-c    mori-go through its C ABI (mg_submit + mg_wait_all)
    mori-py   mori-go through its MORI-IO Python API (IOEngine.batch_write + wait_all)
    mooncake  Mooncake Transfer Engine, protocol tcp (batch_transfer_sync_write)
    nixl      NIXL with the UCX backend restricted to tcp (UCX_TLS=tcp)

Method: for each workload every system runs a warm-up, then ``--rounds``
rounds; in each round every system in turn (the order rotates) runs a slice
of batches of about cell_time/rounds seconds. While one system runs, the
processes of every other system are stopped (SIGSTOP) so that idle threads
(NIXL's progress thread spins) take no CPU from it. Each batch is timed
from submission to completion; the figures are the median (p50) and 99th
percentile batch latency, and throughput computed from the median. Ratios
compare systems measured in the same run, interleaved. After each workload
every target checks a sample of the ranges it received, byte for byte.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import workloads as W  # noqa: E402

LABELS = {
    "memcpy": "memcpy bound",
    "raw": "raw TCP sockets",
    "mori-c": "mori-go (C ABI)",
    "mori-py": "mori-go (Python API)",
    "mooncake": "Mooncake TE (tcp)",
    "nixl": "NIXL (UCX tcp)",
}
ORDER = ["memcpy", "raw", "mori-c", "mori-py", "mooncake", "nixl"]
DEFAULT_CONNS = 4  # mori-go's default streams per peer, Mooncake's default lanes per peer


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- processes -----------------------------------------------------------------


class Proc:
    """A worker process speaking the line protocol."""

    def __init__(self, argv: List[str], env: dict, logpath: str) -> None:
        self.argv = argv
        self.logf = open(logpath, "ab")
        self.logf.write(("\n=== " + " ".join(argv) + "\n").encode())
        self.logf.flush()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.logf, env=env,
                                  cwd=ROOT, start_new_session=True)
        self.q: "queue.Queue[Optional[str]]" = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.logpath = logpath

    def _read(self) -> None:
        for line in self.p.stdout:
            self.q.put(line.decode(errors="replace").rstrip("\n"))
        self.q.put(None)

    def send(self, line: str) -> None:
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def recv(self, timeout: float) -> str:
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        if line is None:
            self.p.wait(timeout=5)
            raise RuntimeError(f"process exited with code {self.p.returncode}; log: {self.tail()}")
        return line

    def call(self, line: str, timeout: float) -> str:
        self.send(line)
        r = self.recv(timeout)
        if r.startswith("err"):
            raise RuntimeError(r[4:])
        return r

    def tail(self, n: int = 600) -> str:
        try:
            self.logf.flush()
            with open(self.logpath, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace").strip().replace("\n", " | ")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.p.poll() is None:
            self.signal(signal.SIGCONT)
            try:
                self.send("quit")
                self.p.wait(timeout=5)
            except Exception:
                pass
        if self.p.poll() is None:
            self.signal(signal.SIGKILL)
            self.p.wait()
        self.logf.close()


class Instance:
    """One system at one connection count: an initiator and its targets."""

    def __init__(self, system: str, conns: int, src: int, dsts: List[int], ctx: "Ctx") -> None:
        self.system, self.conns, self.src, self.dsts, self.ctx = system, conns, src, dsts, ctx
        self.name = system if conns == DEFAULT_CONNS or system in ("memcpy", "nixl") else f"{system}/{conns}"
        self.init: Optional[Proc] = None
        self.targets: List[Proc] = []
        self.error: Optional[str] = None
        self.frozen = False

    def argv(self, role: str, size: int) -> List[str]:
        c, py, wk = self.ctx.cbench, sys.executable, os.path.join(HERE, "worker.py")
        s, n = str(size), str(self.conns)
        return {
            ("raw", "init"): [c, "raw-init", s, n],
            ("raw", "target"): [c, "raw-target", s],
            ("mori-c", "init"): [c, "mg-init", s, n],
            ("mori-c", "target"): [c, "mg-target", s, n],
            ("mori-py", "init"): [py, wk, "init", "mori", "--size", s, "--conns", n],
            ("mori-py", "target"): [py, wk, "target", "mori", "--size", s, "--conns", n],
            ("mooncake", "init"): [py, wk, "init", "mooncake", "--size", s, "--conns", n],
            ("mooncake", "target"): [py, wk, "target", "mooncake", "--size", s, "--conns", n],
            ("nixl", "init"): [py, wk, "init", "nixl", "--size", s],
            ("nixl", "target"): [py, wk, "target", "nixl", "--size", s],
        }[(self.system, role)]

    def env(self) -> dict:
        e = dict(self.ctx.mori_env if self.system == "mori-py" else self.ctx.env)
        if self.system == "mooncake":
            e["MC_TCP_LANES_PER_PEER"] = str(self.conns)
        return e

    def procs(self) -> List[Proc]:
        return ([self.init] if self.init else []) + self.targets

    def start(self) -> None:
        logp = os.path.join(self.ctx.logdir, self.name.replace("/", "-") + ".log")
        try:
            if self.system == "memcpy":
                self.init = Proc([self.ctx.cbench, "memcpy", str(self.src), ",".join(map(str, self.dsts))],
                                 self.env(), logp)
                self.init.call("connect 0", 30)
                return
            for d in self.dsts:
                self.targets.append(Proc(self.argv("target", d), self.env(), logp))
            tokens = []
            for t in self.targets:
                r = t.recv(90)
                if not r.startswith("info "):
                    raise RuntimeError(f"target: {r} ({t.tail()})")
                tokens.append(r[5:])
            self.init = Proc(self.argv("init", self.src), self.env(), logp)
            self.init.call(f"connect {len(tokens)} " + " ".join(tokens), 90)
        except Exception as e:
            self.error = f"{e}"
            for p in self.procs():
                tail = p.tail(1500)
                if tail and tail not in self.error:
                    self.error += f" -- log: {tail}"
                    break
            self.close()

    def freeze(self) -> None:
        if self.ctx.freeze and not self.frozen:
            for p in self.procs():
                p.signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            for p in self.procs():
                p.signal(signal.SIGCONT)
            self.frozen = False

    def close(self) -> None:
        for p in self.procs():
            p.stop()
        self.init, self.targets = None, []


class Ctx:
    def __init__(self, args) -> None:
        self.cbench = args.cbench
        self.freeze = not args.no_freeze
        self.logdir = args.logdir
        self.env = dict(os.environ)
        self.env.update({
            "UCX_TLS": "tcp",  # NIXL: UCX over TCP only (no shared memory, no CMA)
            "MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER": "65535",  # Mooncake: batches above 1024 ranges
            "MC_TCP_MAX_PENDING_ADMISSIONS_PER_PEER": "65535",
            "GLOG_minloglevel": "1",
            "MORI_GO_LOG_LEVEL": "warn",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.pop("MORI_GO_TCP_STREAMS", None)
        self.mori_source = "wheel"
        try:
            import importlib.util

            if importlib.util.find_spec("sglang_mori_go") is None:
                raise ImportError
        except ImportError:  # not installed: use the tree and build/lib
            self.mori_source = "tree"
            self.env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + self.env.get("PYTHONPATH", "")
            self.env.setdefault("MORI_GO_LIBRARY", os.path.join(ROOT, "build", "lib", "libmori_go.so"))
        # Can a Python process load the library? (A library whose static TLS
        # exceeds glibc's dlopen reserve cannot be loaded without a tunable.)
        self.mori_tls_workaround = ""
        probe = [sys.executable, "-c", "import sglang_mori_go._lib as L; L.lib()"]
        r = subprocess.run(probe, env=self.env, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0 and "static TLS" in r.stderr:
            self.mori_tls_workaround = "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384"
            self.mori_env = dict(self.env, GLIBC_TUNABLES="glibc.rtld.optional_static_tls=16384")
        else:
            self.mori_env = self.env


# -- measurement ---------------------------------------------------------------


def measure(insts: List[Instance], wl: W.Workload, args, tmpdir: str, bar=None) -> List[dict]:
    path = os.path.join(tmpdir, "layout.bin")
    wl.write(path)
    live = [i for i in insts if i.init is not None]
    lat: Dict[str, List[float]] = {i.name: [] for i in live}
    err: Dict[str, str] = {}
    per = {}
    slice_t = args.cell_time / args.rounds

    gap = getattr(args, "gap_us", 0) or 0
    cpu: Dict[str, List[float]] = {i.name: [0.0, 0.0, 0] for i in live}  # init s, targets s, batches

    def run(i: Instance, n: int, est: float, count: bool = False) -> List[float]:
        procs = [i.init] + i.targets[: len(wl.peers)]
        before = [cpu_seconds(p.p.pid) for p in procs] if count else None
        r = i.init.call(f"run {n} {gap}" if gap else f"run {n}", timeout=max(60.0, 30 * n * (est + gap * 1e-6)))
        lat = [float(x) for x in r.split()[1:]]
        if before is not None:
            used = [cpu_seconds(p.p.pid) - b for p, b in zip(procs, before)]
            c = cpu[i.name]
            c[0], c[1], c[2] = c[0] + used[0], c[1] + sum(used[1:]), c[2] + len(lat)
        return lat

    for i in live:  # set up and warm up, one at a time
        for j in live:
            j.freeze()
        i.thaw()
        try:
            for k, t in enumerate(i.targets[: len(wl.peers)]):
                t.call(f"clear {path} {k}", 60)
            i.init.call(f"layout {path}", 120)
            w = run(i, 2, 10.0)
            est = max(min(w), 1e-6)
            per[i.name] = (max(1, min(args.max_batches, int(slice_t / (est + gap * 1e-6)))), est)
        except Exception as e:
            err[i.name] = f"{e}"
    for r in range(args.rounds):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for i in order:
            if i.name in err:
                continue
            for j in live:
                if j is not i:
                    j.freeze()
            i.thaw()
            n, est = per[i.name]
            try:
                lat[i.name] += run(i, n, est, count=True)
            except Exception as e:
                err[i.name] = f"{e}"
        if bar is not None:
            bar.update(1)
    out = []
    for i in live:
        i.thaw()
        rec = dict(workload=wl.name, section=wl.section, system=i.system, conns=i.conns, name=i.name,
                   ranges=wl.nranges, bytes=wl.nbytes, peers=len(wl.peers), range_size=wl.range_size)
        if i.name not in err:
            try:
                for k, t in enumerate(i.targets[: len(wl.peers)]):
                    t.call(f"check {path} {k}", 120)
            except Exception as e:
                err[i.name] = f"data check failed: {e}"
        if i.name in err:
            rec["error"] = err[i.name]
            log(f"  {wl.name}: {i.name}: {err[i.name]}")
            # a failed instance is restarted for the next workload
            i.close()
            i.start()
        else:
            x = np.array(lat[i.name])
            p50, p99 = float(np.percentile(x, 50)), float(np.percentile(x, 99))
            rec.update(n=len(x), p50=p50, p99=p99, mean=float(x.mean()), gbps=wl.nbytes / p50 / 1e9,
                       rps=wl.nranges / p50)
            ci, ct, nb = cpu[i.name]
            if nb and ci >= 0 and ct >= 0:
                # CPU time of the initiator and target processes per batch
                # (all their threads, kernel time included; 10 ms ticks).
                # The spin of --gap-us is the initiator's CPU too: not counted.
                rec.update(cpu_init=max(0.0, ci / nb - gap * 1e-6), cpu_target=ct / nb)
            if gap:
                rec["gap_us"] = gap
        out.append(rec)
    for i in live:
        i.freeze()
    for i in insts:  # instances that died earlier and could not be restarted
        if i not in live:
            out.append(dict(workload=wl.name, section=wl.section, system=i.system, conns=i.conns, name=i.name,
                            ranges=wl.nranges, bytes=wl.nbytes, peers=len(wl.peers), range_size=wl.range_size,
                            error=f"not running: {i.error or 'stopped'}"))
    return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process pid so far, all threads (-1e9
    when it cannot be read, which makes the difference negative)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1e9


# -- machine ------------------------------------------------------------------


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass

    def ver(mod: str) -> str:
        try:
            from importlib.metadata import version

            return version(mod)
        except Exception:
            return "not installed"

    def git(*a) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    return dict(
        nproc=os.cpu_count(), cpu=cpu, kernel=platform.release(), mem_gib=round(mem / 2**30, 1),
        python=platform.python_version(), numpy=np.__version__,
        mooncake=ver("mooncake-transfer-engine-non-cuda"), nixl=ver("nixl-cu12"),
        sglang_mori_go=ver("sglang-mori-go"), commit=git("rev-parse", "--short", "HEAD"),
        dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# -- report -------------------------------------------------------------------


def fmt_t(s: float) -> str:
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def fmt_bytes(n: int) -> str:
    if n >= W.MiB:
        return f"{n / W.MiB:.1f} MiB".replace(".0 MiB", " MiB")
    if n >= W.KiB:
        return f"{n / W.KiB:.1f} KiB".replace(".0 KiB", " KiB")
    return f"{n} B"


def fmt_conns(r: dict) -> str:
    return {"memcpy": "–", "nixl": "UCX default"}.get(r["system"], str(r["conns"]))


def fmt_x(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}x"


def index(results: List[dict]) -> Dict[tuple, dict]:
    return {(r["section"], r["workload"], r["name"]): r for r in results}


def ratio(idx, r: dict, base: str) -> Optional[float]:
    """Throughput of r over that of system `base` at the same connections."""
    name = base if r["conns"] == DEFAULT_CONNS or base in ("memcpy", "nixl") else f"{base}/{r['conns']}"
    b = idx.get((r["section"], r["workload"], name))
    if not b or "gbps" not in b or "gbps" not in r:
        return None
    return r["gbps"] / b["gbps"]


def p99_ratio(idx, r: dict, base: str) -> Optional[float]:
    name = base if r["conns"] == DEFAULT_CONNS else f"{base}/{r['conns']}"
    b = idx.get((r["section"], r["workload"], name))
    if not b or "p99" not in b or "p99" not in r:
        return None
    return b["p99"] / r["p99"]


SECTIONS = [
    ("size", "Range size sweep (one target)"),
    ("batch", "Batch size sweep: 4 KiB ranges, 1 to 10,000 per batch (one target)"),
    ("kv", "KV-cache shapes of real models"),
    ("peers", "Many peers: one batch spread over 4 target engines"),
    ("conns", "Connections per peer: 1, 2 and 4"),
]


def workload_order(results: List[dict], section: str) -> List[str]:
    seen = []
    for r in results:
        if r["section"] == section and r["workload"] not in seen:
            seen.append(r["workload"])
    return seen


def summary_table(results, idx, section: str, systems: List[str]) -> List[str]:
    head = ["workload", "ranges", "bytes"] + [LABELS[s] + " GB/s" for s in systems if s != "memcpy"]
    if "memcpy" in systems:
        head.append("memcpy GB/s")
    head += ["mori-go Py x raw", "mori-go Py x Mooncake", "mori-go C x raw", "mori-go C x Mooncake"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for wn in workload_order(results, section):
        row = None
        cells = []
        for s in [s for s in systems if s != "memcpy"] + (["memcpy"] if "memcpy" in systems else []):
            r = idx.get((section, wn, s))
            row = row or r
            cells.append("fail" if r is None or "error" in r else f"{r['gbps']:.3f}")
        rs = []
        for s in ("mori-py", "mori-c"):
            r = idx.get((section, wn, s))
            rs += [fmt_x(ratio(idx, r, "raw")) if r else "–", fmt_x(ratio(idx, r, "mooncake")) if r else "–"]
        lines.append(f"| {wn} | {row['ranges']} | {fmt_bytes(row['bytes'])} | "
                     + " | ".join(cells + rs) + " |")
    return lines


def detail_table(results, idx, section: str) -> List[str]:
    head = ["workload", "system", "conns", "GB/s", "ranges/s", "p50", "p99", "n", "GB/s x raw", "GB/s x Mooncake",
            "p99 x raw", "p99 x Mooncake"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r["section"] != section:
            continue
        if "error" in r:
            lines.append(f"| {r['workload']} | {LABELS[r['system']]} | {fmt_conns(r)} | failed: "
                         f"{r['error'][:300].replace('|', '/')} | | | | | | | | |")
            continue
        lines.append("| " + " | ".join([
            r["workload"], LABELS[r["system"]], fmt_conns(r), f"{r['gbps']:.3f}", fmt_rate(r["rps"]),
            fmt_t(r["p50"]), fmt_t(r["p99"]), str(r["n"]), fmt_x(ratio(idx, r, "raw")),
            fmt_x(ratio(idx, r, "mooncake")), fmt_x(p99_ratio(idx, r, "raw")), fmt_x(p99_ratio(idx, r, "mooncake")),
        ]) + " |")
    return lines


def targets(idx, results) -> List[str]:
    """The three targets, checked against the size sweep."""
    def rows(pred):
        return [r for r in results if r["section"] == "size" and r["system"] == "mori-py" and pred(r)]

    out = []
    checks = [
        ("mori-go >= 1.5x Mooncake TCP throughput, ranges >= 1 MiB", lambda r: r["range_size"] >= W.MiB,
         "mooncake", 1.5),
        ("mori-go >= 2x Mooncake TCP throughput, 4 KiB ranges", lambda r: r["range_size"] == 4 * W.KiB,
         "mooncake", 2.0),
        ("mori-go >= 90% of the raw-socket baseline, ranges >= 1 MiB", lambda r: r["range_size"] >= W.MiB,
         "raw", 0.9),
    ]
    out.append("| target | system | per workload (ratio) | worst | met? |")
    out.append("|---|---|---|---|---|")
    for what, pred, base, want in checks:
        for sysname in ("mori-py", "mori-c"):
            rs = [r for r in results if r["section"] == "size" and r["system"] == sysname and pred(r)]
            vals = [(r["workload"], ratio(idx, r, base)) for r in rs]
            vals = [(w, v) for w, v in vals if v is not None]
            if not vals:
                out.append(f"| {what} | {LABELS[sysname]} | no data | – | – |")
                continue
            worst = min(v for _, v in vals)
            met = "**met**" if worst >= want else f"**missed** (worst {worst:.2f}x vs {want:.2f}x: {100 * (want - worst) / want:.0f}% short)"
            out.append(f"| {what} | {LABELS[sysname]} | " + ", ".join(f"{w}: {v:.2f}x" for w, v in vals)
                       + f" | {worst:.2f}x | {met} |")
    return out


def size_plot(plt, results, systems, marks, series, imgdir) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in systems:
        x, y = series("size", s, "gbps", "range_size")
        if x:
            ax.plot(x, y, marker=marks[s], label=LABELS[s])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = [s for s, _ in W.SIZE_SWEEP]
    ax.set_xticks(ticks)
    ax.set_xticklabels([W.fmt_size(t).replace(" ", "") for t in ticks])
    ax.set_xlabel("range size (one target; ranges per batch in the tables)")
    ax.set_ylabel("GB/s (median batch)")
    ax.set_title("Throughput against range size, loopback TCP, same run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(imgdir, "throughput_vs_size.png"), dpi=110)
    plt.close(fig)


def batch_plot(plt, results, systems, marks, series, imgdir) -> None:
    for r in results:
        r.setdefault("_batch", r["ranges"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for s in systems:
        x, y = series("batch", s, "rps", "_batch")
        if x:
            a1.plot(x, y, marker=marks[s], label=LABELS[s])
        x, y = series("batch", s, "p50", "_batch")
        if x:
            a2.plot(x, [v * 1e3 for v in y], marker=marks[s], label=LABELS[s])
    for a, yl in ((a1, "ranges/s (median batch)"), (a2, "p50 batch latency, ms")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("4 KiB ranges per batch")
        a.set_ylabel(yl)
        a.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle("Batches of 4 KiB ranges")
    fig.tight_layout()
    fig.savefig(os.path.join(imgdir, "batch_sweep.png"), dpi=110)
    plt.close(fig)


def plots(results, idx, imgdir: str, systems: List[str]) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(imgdir, exist_ok=True)
    made = []
    marks = dict(zip(ORDER, "osD^vx"))

    def series(section, system, key, xkey):
        pts = [(r[xkey], r[key]) for r in results
               if r["section"] == section and r["name"] == system and key in r]
        pts.sort()
        return [p[0] for p in pts], [p[1] for p in pts]

    # 1. throughput against range size
    if workload_order(results, "size"):
        size_plot(plt, results, systems, marks, series, imgdir)
        made.append("throughput_vs_size.png")
    if workload_order(results, "batch"):
        batch_plot(plt, results, systems, marks, series, imgdir)
        made.append("batch_sweep.png")

    # 3. KV shapes and many peers: grouped bars
    wls = workload_order(results, "kv") + workload_order(results, "peers")
    if wls:
        fig, ax = plt.subplots(figsize=(11, 5))
        sy = [s for s in systems if s != "memcpy"]
        width = 0.8 / max(1, len(sy))
        for k, s in enumerate(sy):
            ys = []
            for wn in wls:
                r = idx.get(("kv", wn, s)) or idx.get(("peers", wn, s))
                ys.append(r["gbps"] if r and "gbps" in r else 0)
            ax.bar(np.arange(len(wls)) + k * width, ys, width, label=LABELS[s])
        ax.set_xticks(np.arange(len(wls)) + 0.4 - width / 2)
        ax.set_xticklabels([w.replace(", ", "\n", 2) for w in wls], fontsize=7)
        ax.set_ylabel("GB/s (median batch)")
        ax.set_title("KV-cache shapes and many peers")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(imgdir, "kv_shapes.png"), dpi=110)
        plt.close(fig)
        made.append("kv_shapes.png")

    # 4. connections
    cw = workload_order(results, "conns")
    if cw:
        fig, axs = plt.subplots(1, len(cw), figsize=(5.5 * len(cw), 4.5))
        axs = np.atleast_1d(axs)
        for a, wn in zip(axs, cw):
            for s in systems:
                pts = sorted((r["conns"], r["gbps"]) for r in results
                             if r["section"] == "conns" and r["workload"] == wn and r["system"] == s and "gbps" in r)
                if pts:
                    a.plot([p[0] for p in pts], [p[1] for p in pts], marker=marks[s], label=LABELS[s])
            a.set_xticks([1, 2, 4])
            a.set_xlabel("TCP connections per peer")
            a.set_ylabel("GB/s (median batch)")
            a.set_title(wn)
            a.grid(True, alpha=0.3)
        axs[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(imgdir, "connections.png"), dpi=110)
        plt.close(fig)
        made.append("connections.png")
    return made


def write_page(path: str, imgdir: str, results: List[dict], meta: dict, failures: Dict[str, str],
               systems: List[str], args) -> None:
    idx = index(results)
    rel = os.path.relpath(imgdir, os.path.dirname(path))
    made = plots(results, idx, imgdir, systems)
    m = meta["machine"]
    L = []
    L.append("# Benchmarks: mori-go against the alternatives, same machine, same run")
    L.append("")
    L.append("Generated by `scripts/bench.sh` (`bench/run.py`); do not edit by hand: rerun it. "
             "Every figure on this page comes from one run, with all systems interleaved, so the ratios "
             "hold even on a noisy machine; the absolute numbers do not travel.")
    L.append("")
    L.append("## Command")
    L.append("")
    L.append("```sh")
    L.append("scripts/bench.sh            # full run, about 15 minutes; rewrites this page and docs/img/*.png")
    L.append("scripts/bench-smoke.sh      # < 60 s CI smoke: mori-go, raw sockets and memcpy, data checked")
    L.append("```")
    L.append("")
    L.append(f"This run: `{' '.join(meta['argv'])}`, {meta['elapsed_s'] / 60:.1f} minutes.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, Linux {m['kernel']} (a Firecracker VM)")
    L.append(f"- load average (1, 5, 15 min) at start {meta['load_start']}, at end {meta['load_end']}: "
             "other engineers' builds ran on the same 2 cores")
    L.append(f"- Python {m['python']}, numpy {m['numpy']}; mori-go at commit {m['commit']}"
             f"{' plus uncommitted changes' if m['dirty'] else ''}, Python API sglang-mori-go "
             f"{m['sglang_mori_go']} ({meta['mori_source']})")
    L.append(f"- Mooncake: mooncake-transfer-engine-non-cuda {m['mooncake']}; NIXL: nixl-cu12 {m['nixl']}")
    if meta.get("mori_tls_workaround"):
        L.append(f"- **libmori_go.so could not be loaded by Python** (`dlopen`: cannot allocate memory in static "
                 f"TLS block); the mori-go Python API rows ran with `{meta['mori_tls_workaround']}`. "
                 "A library bug, not a setting: SGLang would hit it.")
    L.append(f"- {m['date']}")
    L.append("")
    L.append("## Method")
    L.append("")
    L.append("- Every system runs as separate processes started with `subprocess` (nothing forked): one "
             "initiator and one process per target engine, on loopback (127.0.0.1). Memory is host memory "
             "(anonymous mmap, every page touched before timing); there is no GPU here.")
    L.append("- Every batch is a one-sided WRITE of the workload's ranges from the initiator's buffer into the "
             "targets' buffers, timed from the first call that submits it to the return of the call that "
             "reports it complete. Per system: mori-go Python `IOEngine.batch_write` (one transfer per target) + "
             "`wait_all`; mori-go C `mg_submit` + `mg_wait_all`; Mooncake `batch_transfer_sync_write` (one "
             "target) or `batch_transfer_async_write` per target + `get_batch_transfer_status`; NIXL "
             "`initialize_xfer` + `transfer` + polling `check_xfer_state` + `release_xfer_handle`; raw sockets: "
             "writev/readv, see below. Argument arrays are built beforehand in the form each API takes.")
    L.append("- **raw TCP sockets** (`bench/cbench.c`) is the ideal plain-socket transfer: as many TCP "
             f"connections per target as the engines use ({DEFAULT_CONNS}), the batch cut into equal byte slices, "
             "`writev` straight from the source ranges, the receiver knowing the layout in advance and `readv`-ing "
             "into the destination ranges, one byte of acknowledgement. No headers, no descriptors, no checks. "
             "**memcpy bound**: the same ranges copied by one thread in one process.")
    L.append(f"- Connections: mori-go uses its default {DEFAULT_CONNS} TCP streams per peer, Mooncake its default "
             f"{DEFAULT_CONNS} lanes per peer (`MC_TCP_LANES_PER_PEER`), raw sockets {DEFAULT_CONNS} connections; "
             "NIXL/UCX its defaults. The connections section varies them (mori-go `tcp_streams`/`\"tcp\": "
             "{\"streams\": n}`, Mooncake `MC_TCP_LANES_PER_PEER`, raw: n sockets; NIXL has no such knob over "
             "UCX tcp and is left out there).")
    L.append("- Settings of the others: Mooncake with `MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER=65535` and "
             "`MC_TCP_MAX_PENDING_ADMISSIONS_PER_PEER=65535` (its defaults, 1024, reject batches of more "
             "than 1024 ranges with `TCP lane queue-full rejection`), metadata `P2PHANDSHAKE`. Mooncake's own "
             "`transfer_engine_bench --protocol=tcp` (shipped in the wheel) gives the same order of magnitude "
             "here (0.03 GB/s with 4 KiB blocks, 0.56 GB/s with 1 MiB blocks, batch 128, write), so its low "
             "small-range figures are not this harness's doing: its TCP transport acknowledges each range. "
             "NIXL with `UCX_TLS=tcp` (TCP only: no shared memory or CMA, which would not be a network "
             "transfer); the targets keep NIXL's progress thread, the initiator runs without it and progresses "
             "by polling `check_xfer_state` (faster here than with the thread: 2 cores). NIXL is installed "
             "as `nixl-cu12` with `--no-deps`: its declared dependency on torch (and ~2 GB of CUDA wheels) is "
             "not needed for host memory. NIXL's small-batch latency is bimodal on this machine: from one "
             "run to the next its p50 for a single 4 KiB range is either about 40-60 µs or about 8-12 ms.")
    L.append(f"- Interleaving: per workload each system is warmed up (2 batches), then {args.rounds} rounds; in "
             f"each round each system in turn (rotating order) runs batches for about "
             f"{args.cell_time / args.rounds:.2f} s (at least one). While one system runs, every other system's "
             "processes are stopped with SIGSTOP, so idle threads cost nothing (NIXL's progress thread spins: "
             "about 0.7 of a core when idle). n is the number of batches timed.")
    L.append("- Figures: GB/s = batch bytes / median batch latency (1 GB = 10^9 B); ranges/s = ranges / median "
             "latency; p50 and p99 batch latency. `x raw` and `x Mooncake` are throughput ratios (p50) against "
             "those systems in the same run and, in the connections section, at the same connection count; "
             "`p99 x` is the other system's p99 over this one's (above 1: better tail). The results file also "
             "holds each cell's CPU time per batch of the initiator and target processes (`cpu_init`, "
             "`cpu_target`: user + system time of all threads from /proc around the timed batches).")
    L.append("- Checked: after each workload every target verifies 8 of the ranges it received (first, last, "
             "evenly spaced ones), every byte, against the source pattern; a mismatch fails the cell.")
    L.append("")
    if failures:
        L.append("## Systems that did not run")
        L.append("")
        for s, e in failures.items():
            L.append(f"- **{LABELS.get(s, s)}**: `{e[:1500]}`")
        L.append("")
    L.append("## Targets")
    L.append("")
    L.append("Checked on the range size sweep (one target, default connections), same run:")
    L.append("")
    L += targets(idx, results)
    L.append("")
    L.append("### Where mori-go trails the raw-socket baseline")
    L.append("")
    L.append("Every workload of this run (default connections) where mori-go's throughput is below 0.9x raw "
             "sockets, worst first:")
    L.append("")
    lag = []
    for r in results:
        if r["system"] in ("mori-py", "mori-c") and r["conns"] == DEFAULT_CONNS and "gbps" in r:
            x = ratio(idx, r, "raw")
            if x is not None and x < 0.9:
                b = idx.get((r["section"], r["workload"], "raw"))
                lag.append((x, r, b))
    lag.sort(key=lambda t: t[0])
    if not lag:
        L.append("- none")
    for x, r, b in lag:
        L.append(f"- {r['workload']} ({r['section']}), {LABELS[r['system']]}: {x:.2f}x raw "
                 f"(p50 {fmt_t(r['p50'])} against {fmt_t(b['p50'])}; {fmt_rate(r['rps'])} against "
                 f"{fmt_rate(b['rps'])} ranges/s)")
    L.append("")
    L.append("## Plots")
    L.append("")
    titles = {"throughput_vs_size.png": "Throughput against range size",
              "batch_sweep.png": "Ranges/s and latency against batch size",
              "kv_shapes.png": "KV-cache shapes and many peers",
              "connections.png": "Connections per peer"}
    for f in made:
        L.append(f"![{titles.get(f, f)}]({rel}/{f})")
        L.append("")
    L.append("## Summary: GB/s per system and mori-go's ratios")
    L.append("")
    for sec, title in SECTIONS:
        if sec == "conns" or not workload_order(results, sec):
            continue
        L.append(f"### {title}")
        L.append("")
        L += summary_table(results, idx, sec, systems)
        L.append("")
        if sec == "kv":
            notes = meta.get("notes", {})
            for wn in workload_order(results, sec):
                if notes.get(wn):
                    L.append(f"- *{wn}*: {notes[wn]}")
            L.append("")
    L.append("## All figures")
    L.append("")
    for sec, title in SECTIONS:
        if not workload_order(results, sec):
            continue
        L.append(f"### {title}")
        L.append("")
        L += detail_table(results, idx, sec)
        L.append("")
    L.append("Raw results (every batch latency) are in `build/bench/results.json` after a run.")
    L.append("")
    text = "\n".join(L) + _kept_tail(path)
    with open(path, "w") as f:
        f.write(text)


# Sections after this line are measured by other commands (mori-bench -tls)
# and kept as they are when the page is regenerated.
KEEP_MARKER = "<!-- sections below: written by other commands, kept by bench/run.py -->"


def _kept_tail(path: str) -> str:
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        return ""
    i = old.find(KEEP_MARKER)
    return "" if i < 0 else "\n" + old[i:]


def print_table(results: List[dict]) -> None:
    idx = index(results)
    log(f"{'workload':<44} {'system':<24} {'GB/s':>8} {'ranges/s':>10} {'p50':>10} {'p99':>10} {'x raw':>7} {'x MC':>7}"
        f" {'CPU/batch init+target':>22}")
    for r in results:
        if "error" in r:
            log(f"{r['workload'][:44]:<44} {r['name']:<24} FAILED: {r['error'][:200]}")
            continue
        c = f"{fmt_t(r['cpu_init'])} + {fmt_t(r['cpu_target'])}" if "cpu_init" in r else "-"
        log(f"{r['workload'][:44]:<44} {r['name']:<24} {r['gbps']:8.3f} {fmt_rate(r['rps']):>10} "
            f"{fmt_t(r['p50']):>10} {fmt_t(r['p99']):>10} {fmt_x(ratio(idx, r, 'raw')):>7} "
            f"{fmt_x(ratio(idx, r, 'mooncake')):>7} {c:>22}")


# -- main ---------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="short CI run: few workloads, no page written")
    ap.add_argument("--systems", default=None, help="comma list of " + ",".join(ORDER))
    ap.add_argument("--only", default=None, help="run only workloads whose name contains this (=NAME: exactly NAME) "
                    "(alternatives separated by |)")
    ap.add_argument("--no-conns", action="store_true", help="skip the connections section")
    ap.add_argument("--cell-time", type=float, default=None, help="seconds of timed batches per system per workload")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per workload")
    ap.add_argument("--max-batches", type=int, default=2000, help="most batches per system per round")
    ap.add_argument("--gap-us", type=int, default=0, help="microseconds each initiator spins before each batch, "
                    "outside its time (a caller's own work between transfers; default 0: back to back)")
    ap.add_argument("--cbench", default=os.path.join(ROOT, "build", "bench", "cbench"))
    ap.add_argument("--doc", default=None, help="page to write (default docs/benchmarks.md, on full runs only: "
                    "not with --smoke, --only or --systems)")
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--json", default=None, help="results file (default build/bench/results.json; "
                    "results-partial.json or smoke.json for partial runs)")
    ap.add_argument("--logdir", default=os.path.join(ROOT, "build", "bench", "logs"))
    ap.add_argument("--no-freeze", action="store_true", help="leave idle systems running")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--from-json", default=None, help="rewrite the page from a results.json; run nothing")
    args = ap.parse_args()
    partial = bool(args.smoke or args.only or args.systems or args.no_conns)
    if args.doc is None:
        args.doc = os.path.join(ROOT, "docs", "benchmarks.md")
        if partial and not args.from_json:
            args.no_doc = True
    if args.json is None:
        name = "smoke.json" if args.smoke else "results-partial.json" if partial else "results.json"
        args.json = os.path.join(ROOT, "build", "bench", name)
    if args.from_json:
        with open(args.from_json) as f:
            d = json.load(f)
        m = d["meta"]
        args.rounds, args.cell_time = m.get("rounds", 5), m.get("cell_time", 3.0)
        systems = [s for s in ORDER if any(r["system"] == s for r in d["results"])]
        write_page(args.doc, args.img, d["results"], m, d["failures"], systems, args)
        log(f"bench: wrote {os.path.relpath(args.doc, ROOT)} from {args.from_json}")
        return 0
    if args.smoke:
        systems = args.systems.split(",") if args.systems else ["memcpy", "raw", "mori-c", "mori-py"]
        args.cell_time = args.cell_time or 0.4
        args.rounds = args.rounds or 3
        args.no_doc = True
        args.no_conns = True
        wls = W.smoke()
    else:
        systems = args.systems.split(",") if args.systems else list(ORDER)
        args.cell_time = args.cell_time or 3.0
        args.rounds = args.rounds or 5
        wls = W.full()
    for s in systems:
        if s not in LABELS:
            ap.error(f"unknown system {s}")
    systems = [s for s in ORDER if s in systems]
    conn_wls = [] if args.no_conns else W.conns()
    if args.only:
        wanted = args.only.split("|")
        # "=name" asks for that workload exactly, anything else a substring
        def picked(name):
            return any(name == o[1:] if o.startswith("=") else o in name for o in wanted)
        wls = [w for w in wls if picked(w.name)]
        conn_wls = [w for w in conn_wls if picked(w.name)]
    if not os.access(args.cbench, os.X_OK):
        log(f"bench: {args.cbench} missing: build it with scripts/bench.sh")
        return 2
    shutil.rmtree(args.logdir, ignore_errors=True)
    os.makedirs(args.logdir, exist_ok=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    ctx = Ctx(args)
    t_start = time.time()
    meta = dict(argv=["bench/run.py"] + sys.argv[1:], machine=machine(), load_start=loadavg(),
                mori_source=ctx.mori_source, mori_tls_workaround=ctx.mori_tls_workaround,
                notes={w.name: w.note for w in wls})
    if ctx.mori_tls_workaround:
        log(f"bench: WARNING: libmori_go.so cannot be dlopen'ed by Python (static TLS); mori-go (Python API) "
            f"runs with {ctx.mori_tls_workaround}")
    log(f"bench: {meta['machine']['nproc']} CPUs, load {meta['load_start']}; systems: {', '.join(systems)}; "
        f"{len(wls)} workloads + {len(conn_wls)} x connections; mori-go Python API from the {ctx.mori_source}")

    # buffer sizes: source = largest local extent; target k = largest extent of peer k
    allw = wls + conn_wls
    src = max(w.src_extent() for w in allw)
    npeers = max(len(w.peers) for w in allw)
    dsts = [max(w.dst_extent(k) for w in allw) for k in range(npeers)]
    insts: List[Instance] = []
    failures: Dict[str, str] = {}
    for s in systems:
        i = Instance(s, DEFAULT_CONNS, src, dsts, ctx)
        log(f"bench: starting {LABELS[s]} ...")
        i.start()
        if i.error:
            failures[s] = i.error
            log(f"bench: {LABELS[s]} does not run: {i.error[:2000]}")
            continue
        i.freeze()
        insts.append(i)
    extra: List[Instance] = []
    if conn_wls:
        csrc = max(w.src_extent() for w in conn_wls)
        cd = [max(w.dst_extent(0) for w in conn_wls)]
        for s in ("raw", "mori-c", "mori-py", "mooncake"):
            if s in systems and s not in failures:
                for c in (1, 2):
                    i = Instance(s, c, csrc, cd, ctx)
                    i.start()
                    if i.error:
                        failures[i.name] = i.error
                        continue
                    i.freeze()
                    extra.append(i)

    total = args.rounds * (len(wls) + len(conn_wls))
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="round", desc="bench", dynamic_ncols=True)
        except ImportError:
            bar = None
    results: List[dict] = []
    tmpdir = tempfile.mkdtemp(prefix="mori-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        for w in wls:
            if bar is not None:
                bar.set_postfix_str(w.name[:40])
            results += measure(insts, w, args, tmpdir, bar)
        for w in conn_wls:
            if bar is not None:
                bar.set_postfix_str("conns: " + w.name)
            cin = [i for i in insts if i.system in ("raw", "mori-c", "mori-py", "mooncake")] + extra
            results += measure(cin, w, args, tmpdir, bar)
    finally:
        if bar is not None:
            bar.close()
        for i in insts + extra:
            i.thaw()
            i.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    meta["elapsed_s"] = time.time() - t_start
    meta["rounds"], meta["cell_time"] = args.rounds, args.cell_time
    meta["load_end"] = loadavg()
    with open(args.json, "w") as f:
        json.dump(dict(meta=meta, failures=failures, results=results), f, indent=1)
    print_table(results)
    if not args.no_doc:
        write_page(args.doc, args.img, results, meta, failures, systems, args)
        log(f"bench: wrote {os.path.relpath(args.doc, ROOT)} and {os.path.relpath(args.img, ROOT)}/*.png")
    log(f"bench: {meta['elapsed_s']:.0f} s, load at end {meta['load_end']}; results in "
        f"{os.path.relpath(args.json, ROOT)}")
    bad = [r for r in results if "error" in r and r["system"] in ("mori-py", "mori-c")]
    bad += [{"error": e} for s, e in failures.items() if s.startswith("mori")]
    if bad:
        log("bench: mori-go failed: " + "; ".join(r["error"][:300] for r in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
