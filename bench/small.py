#!/usr/bin/env python3
"""Small transfers (issue 16): the targets, checked on a benchmark run, and
the latency breakdown of one 4 KiB write before and after.

    python bench/small.py            rewrite the section of docs/benchmarks.md

Reads what scripts/small-transfers.sh measured: bench/results/small.json
(bench/run.py on the small-transfer workloads, one interleaved run),
small-gap.json (one write with 20 µs of caller work between writes),
small-haltpoll.json (the guest's idle polling on, a diagnostic),
small-cubic.json (every system on cubic congestion control, a diagnostic) and
bench/results/breakdown-{before,after}.md (scripts/latency-breakdown.sh at
the commit before the work and at the current one, run in alternation).
The section sits below bench/run.py's keep marker, between its own
markers, so that a full benchmark run keeps it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
KEEP_MARKER = "<!-- sections below: written by other commands, kept by bench/run.py -->"
BEGIN = "<!-- small transfers: begin (bench/small.py; scripts/small-transfers.sh) -->"
END = "<!-- small transfers: end -->"

# Workloads of the targets, as bench/workloads.py names them.
WORKLOADS = "4 KiB x|1 KiB x 8192|MiB x"


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


class Run:
    def __init__(self, path: str) -> None:
        with open(path) as f:
            d = json.load(f)
        self.meta = d["meta"]
        self.idx: Dict[Tuple[str, str], dict] = {}
        for r in d["results"]:
            if r.get("conns", 4) == 4 and "p50" in r:
                self.idx[(r["workload"], r["system"])] = r

    def p50(self, workload: str, system: str) -> Optional[float]:
        r = self.idx.get((workload, system))
        return r["p50"] if r else None


def checks(run: Run) -> List[Tuple[str, str, Optional[float], str, bool, str]]:
    """The targets checked on one run: (target, API, measured, bound, met,
    by how much it is missed)."""
    out = []

    def add(what: str, system: str, value: Optional[float], want: str, ok: bool, miss: str) -> None:
        out.append((what, {"mori-c": "C ABI", "mori-py": "Python"}[system], value, want, ok, miss))

    raw1 = run.p50("4 KiB x 1", "raw")
    for system, bound in (("mori-c", 1.5), ("mori-py", 2.0)):
        p = run.p50("4 KiB x 1", system)
        x = p / raw1 if p and raw1 else None
        add("4 KiB x 1: latency over raw sockets'", system, x, f"≤ {bound}x", x is not None and x <= bound,
            f"{x / bound:.1f} times the bound ({fmt_t(p)} against {fmt_t(raw1)})" if x else "")
        for peer, name in (("nixl", "NIXL"), ("mooncake", "Mooncake")):
            q = run.p50("4 KiB x 1", peer)
            y = p / q if p and q else None
            add(f"4 KiB x 1: latency over {name}'s", system, y, "< 1x", y is not None and y < 1,
                f"{fmt_t(p)} against {fmt_t(q)}" if y else "")
    thr = [("4 KiB x 10", 0.7), ("4 KiB x 1000", 0.9), ("4 KiB x 10000", 0.9), ("1 KiB x 8192", 0.9),
           ("1 MiB x 32 over 4 targets", 0.9), ("4 KiB x 4096 over 4 targets", 0.9),
           ("1 MiB x 32", 0.95), ("4 MiB x 8", 0.95), ("16 MiB x 2", 0.95), ("64 MiB x 1", 0.95)]
    for w, bound in thr:
        raw = run.p50(w, "raw")
        for system in ("mori-c", "mori-py"):
            p = run.p50(w, system)
            x = raw / p if p and raw else None
            add(f"{w}: throughput over raw sockets'", system, x, f"≥ {bound}x", x is not None and x >= bound,
                f"{_short(bound - x)} short ({fmt_t(p)} against {fmt_t(raw)})" if x else "")
    for n in (10, 100, 1000, 10000):
        w = f"4 KiB x {n}"
        c, p = run.p50(w, "mori-c"), run.p50(w, "mori-py")
        x = p / c if p and c else None
        add(f"{w}: Python latency over the C ABI's", "mori-py", x, "≤ 1.3x", x is not None and x <= 1.3,
            f"{fmt_t(p)} against {fmt_t(c)}" if x else "")
    return out


def _short(d: float) -> str:
    """How far a ratio falls short of its bound, with a digit more when
    two would print 0.00."""
    return f"{d:.2f}" if d >= 0.01 else f"{d:.3f}"


def check_rows(runs: List[Run]) -> List[str]:
    """The targets table: one measured/verdict pair of columns per run."""
    cols = ["this run"] + ["previous run"] * (len(runs) - 1)
    rows = ["| target | API | bound | " + " | ".join(f"{c} | verdict" for c in cols) + " |",
            "|---|---|---|" + "---|---|" * len(runs)]
    per_run = [checks(r) for r in runs]
    for i, (what, api, _, want, _, _) in enumerate(per_run[0]):
        cells = []
        for rc in per_run:
            _, _, x, _, ok, miss = rc[i]
            if x is None:
                cells.append("not measured | –")
            else:
                cells.append(f"{x:.2f}x | " + ("met" if ok else f"**missed**: {miss}"))
        rows.append(f"| {what} | {api} | {want} | " + " | ".join(cells) + " |")
    return rows


def latency_rows(run: Run) -> List[str]:
    systems = ["raw", "mori-c", "mori-py", "mooncake", "nixl"]
    out = ["| workload | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    names = sorted({w for (w, _) in run.idx}, key=_order)
    for w in names:
        cells = []
        for s in systems:
            p = run.p50(w, s)
            cells.append(fmt_t(p) if p else "–")
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    return out


SYSTEMS = ["raw", "mori-c", "mori-py", "mooncake", "nixl"]


def cpu_rows(run: Run) -> List[str]:
    """CPU time per batch of the initiator and target processes."""
    out = ["| workload | " + " | ".join(SYSTEMS) + " |", "|---" * (len(SYSTEMS) + 1) + "|"]
    for w in ("4 KiB x 1", "4 KiB x 10", "4 KiB x 1000", "1 KiB x 8192", "4 KiB x 4096 over 4 targets",
              "1 MiB x 32"):
        cells = []
        for s in SYSTEMS:
            r = run.idx.get((w, s))
            cells.append(f"{fmt_t(r['cpu_init'])} + {fmt_t(r['cpu_target'])}" if r and "cpu_init" in r else "–")
        if any(c != "–" for c in cells):
            out.append(f"| {w} | " + " | ".join(cells) + " |")
    return out


def condition_rows(run: Run) -> List[str]:
    """One write (and ten) back to back, with caller work between writes,
    and with the guest's idle polling on: p50 per system."""
    conds = [("back to back (the run above)", run)]
    for label, name in (("20 µs of caller work before each write", "small-gap.json"),
                        ("guest idle polling on (diagnostic)", "small-haltpoll.json")):
        path = os.path.join(RESULTS, name)
        if os.path.exists(path):
            conds.append((label, Run(path)))
    out = ["| workload | condition | " + " | ".join(SYSTEMS) + " | Python / C |",
           "|---|---" + "|---" * len(SYSTEMS) + "|---|"]
    for w in ("4 KiB x 1", "4 KiB x 10"):
        for label, r in conds:
            cells = [fmt_t(r.p50(w, s)) if r.p50(w, s) else "–" for s in SYSTEMS]
            c, p = r.p50(w, "mori-c"), r.p50(w, "mori-py")
            x = f"{p / c:.2f}x" if c and p else "–"
            out.append(f"| {w} | {label} | " + " | ".join(cells) + f" | {x} |")
    return out


def cubic_rows(run: Run) -> List[str]:
    """The workloads of the cubic pass: p50 per system and mori-go's
    throughput over raw sockets', with the default run's ratio beside it."""
    path = os.path.join(RESULTS, "small-cubic.json")
    if not os.path.exists(path):
        return ["(not measured: no bench/results/small-cubic.json)"]
    cub = Run(path)
    out = ["| workload | raw | mori-c | mori-py | mooncake | nixl | C ABI x raw (default run) | Python x raw "
           "(default run) |", "|---" * 8 + "|"]
    for w in sorted({w for (w, _) in cub.idx}, key=_order):
        cells = [fmt_t(cub.p50(w, s)) if cub.p50(w, s) else "–" for s in SYSTEMS]
        for s in ("mori-c", "mori-py"):
            x, y = cub.p50(w, "raw"), cub.p50(w, s)
            a, b = run.p50(w, "raw"), run.p50(w, s)
            now = f"{x / y:.2f}x" if x and y else "–"
            was = f"{a / b:.2f}x" if a and b else "–"
            cells.append(f"{now} ({was})")
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    return out


def _order(name: str) -> Tuple[int, float, int]:
    # size sweep-like order: range size, then count, targets last
    parts = name.split()
    unit = {"KiB": 1 << 10, "MiB": 1 << 20}.get(parts[1], 1)
    return (1 if "targets" in name else 0, float(parts[0]) * unit, int(parts[3]))


def breakdown(name: str) -> List[str]:
    path = os.path.join(RESULTS, f"breakdown-{name}.md")
    if not os.path.exists(path):
        return [f"(no {path})"]
    with open(path) as f:
        return [ln for ln in f.read().splitlines() if ln.startswith("|")]


def section() -> List[str]:
    run = Run(os.path.join(RESULTS, "small.json"))
    runs = [run]
    prev = os.path.join(RESULTS, "small-previous.json")
    if os.path.exists(prev):
        runs.append(Run(prev))
    m = run.meta
    L = [BEGIN, "", "## Small transfers (issue 16)", ""]
    L.append("Written by `scripts/small-transfers.sh` (`bench/small.py`): one interleaved run of "
             "`bench/run.py` on the small-transfer workloads and the latency breakdown of one 4 KiB write, "
             "before and after; do not edit by hand. These machines are shared (2 cores, several engineers' "
             "builds): read the ratios, not the absolute times.")
    L.append("")
    for name, r in zip(("This run", "Previous run"), runs):
        rm = r.meta
        L.append(f"{name}: `{' '.join(rm['argv'])}` at commit {rm['machine']['commit']}, {rm['machine']['date']}, "
                 f"load average {rm['load_start']} at start, {rm['load_end']} at end.")
        L.append("")
    L.append("")
    L.append("### Targets")
    L.append("")
    L.append("Measured: the ratio the target is stated in (latency ratio: lower is better; throughput ratio: "
             "higher is better). The previous run is the one before (the command keeps it), to show how far "
             "one run can be from the next on this machine.")
    L.append("")
    L += check_rows(runs)
    L.append("")
    L.append("### p50 batch latency, this run")
    L.append("")
    L += latency_rows(run)
    L.append("")
    L.append("### CPU time per batch, this run")
    L.append("")
    L.append("User and system time of the initiator process + the target process(es) per batch, all threads, "
             "from `/proc/PID/stat` around the timed batches (`bench/run.py` records it for every workload; 10 ms "
             "ticks over about 2 s per cell). A system that polls spends CPU while it waits: the initiator's "
             "figure of mori-go includes its waiter's busy poll (up to 50 µs a wait), NIXL's target its progress "
             "thread's.")
    L.append("")
    L += cpu_rows(run)
    L.append("")
    L.append("### One write after the caller's own work, and on a VM whose idle vCPUs poll")
    L.append("")
    L.append("p50 latency. *Back to back*: the table above (the benchmark's loop submits the next write the "
             "moment the last one ends). *20 µs of caller work*: `bench/run.py --gap-us 20`, every initiator "
             "spins 20 µs before each batch, outside its time, as a caller (SGLang, Python) does between "
             "requests. *Guest idle polling on*: a diagnostic, not a setting of mori-go: "
             "`scripts/small-transfers.sh` sets the guest kernel's `guest_halt_poll_ns` "
             "(cpuidle-haltpoll) from 0, as these VMs have it, to 200000, the kernel's default, for one run and "
             "puts it back: an idle vCPU then polls 200 µs before it halts, and waking a thread on it no longer "
             "goes through the hypervisor.")
    L.append("")
    L += condition_rows(run)
    L.append("")
    L.append("### Every system on cubic congestion control (diagnostic)")
    L.append("")
    L.append("These VMs default to bbr (`net.ipv4.tcp_congestion_control`), which paces every stream with a "
             "kernel timer per burst at the bandwidth it estimates, far below loopback's. "
             "`scripts/small-transfers.sh` switches the default to cubic (Linux's own default) for one run of "
             "these workloads and puts it back; every system's sockets then use it. p50 latency; the ratios are "
             "throughput over raw sockets' in the same run (in brackets: the default run above). mori-go can "
             "choose its streams' algorithm itself (`tcp.congestion`, Python `tcp_congestion` / "
             "`MORI_GO_TCP_CONGESTION`); this pass does not use that.")
    L.append("")
    L += cubic_rows(run)
    L.append("")
    L.append("### Where the time of one 4 KiB write goes")
    L.append("")
    L.append("`scripts/latency-breakdown.sh`: a 4 KiB write from an engine to an engine in another process, "
             "one at a time from a thread-locked goroutine, timestamps (`internal/lattrace`, build tag "
             "`latencytrace`) at each step; the median of each step (time since the step before) over 3000 "
             "writes, and the median of the whole (not the sum of the medians). *Before*: the commit before "
             "this work, waiting as the C ABI then did (a goroutine parked on a channel); *after*: the current "
             "tree, waiting as the C ABI now does. Run in alternation, the run with the median total of each "
             "kept.")
    L.append("")
    before, after = breakdown("before"), breakdown("after")
    if len(before) == len(after) and len(after) > 2:
        L.append("| step | before, µs | after, µs |")
        L.append("|---|---|---|")
        for b, a in zip(before[2:], after[2:]):
            step = b.split("|")[1].strip()
            L.append(f"| {step} | {b.split('|')[2].strip()} | {a.split('|')[2].strip()} |")
    else:
        L += ["Before:", ""] + before + ["", "After:", ""] + after
    L.append("")
    notes = os.path.join(RESULTS, "small-notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L.append(f.read().rstrip())
        L.append("")
    L.append(END)
    return L


def pick(tmp: str) -> None:
    """Of the breakdown tables in tmp (before-N.md, after-N.md), keep for
    each tree the one with the median total as breakdown-{before,after}.md."""
    for v in ("before", "after"):
        runs = []
        for name in sorted(os.listdir(tmp)):
            if name.startswith(v + "-") and name.endswith(".md"):
                with open(os.path.join(tmp, name)) as f:
                    text = f.read()
                line = next(ln for ln in text.splitlines() if "submit to waiter" in ln)
                total = float(line.split("|")[2].strip(" *"))
                runs.append((total, text))
        runs.sort(key=lambda t: t[0])
        with open(os.path.join(RESULTS, f"breakdown-{v}.md"), "w") as f:
            f.write(runs[len(runs) // 2][1])


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--pick":
        pick(sys.argv[2])
        return 0
    with open(PAGE) as f:
        page = f.read()
    text = "\n".join(section()) + "\n"
    if BEGIN in page and END in page:
        i, j = page.index(BEGIN), page.index(END) + len(END)
        page = page[:i] + text.rstrip("\n") + page[j:]
    else:
        if KEEP_MARKER not in page:
            page = page.rstrip("\n") + "\n\n" + KEEP_MARKER + "\n"
        i = page.index(KEEP_MARKER) + len(KEEP_MARKER)
        page = page[:i] + "\n\n" + text + page[i:]
    with open(PAGE, "w") as f:
        f.write(page)
    sys.stderr.write(f"small.py: wrote the small-transfer section of {os.path.relpath(PAGE, ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
