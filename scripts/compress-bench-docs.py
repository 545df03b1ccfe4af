#!/usr/bin/env python3
"""Puts the tables of scripts/compress-bench.sh into docs/benchmarks.md.

The section lives among the sections written by other commands (after
bench/run.py's keep marker, added if missing), between its own begin and end
comments, and is replaced as a whole on each run.

    compress-bench-docs.py build/compress-bench.md docs/benchmarks.md
"""
import sys

KEEP = "<!-- sections below: written by other commands, kept by bench/run.py -->"
BEGIN = "<!-- compress-bench: begin (scripts/compress-bench.sh) -->"
END = "<!-- compress-bench: end -->"

INTRO = """## Compression on slow links (off, s2, zstd, auto)

Writes from one TCP backend to another (transport/tcp with
transport/compress; docs/compression.md), measured by
`cmd/mori-compress-bench`: transfers of 16 MiB (4 MiB at 100 Mb/s) in
64 KiB ranges, 2 in flight, 4 streams, each mode with a fresh initiator
(auto learns from nothing), 2 s of warm-up (3 s on loopback) then 3 s
measured (6 s at 100 Mb/s). The modes run in turn on the same data, round
after round; a row is the median of the rounds, and "vs off" its speed
over off's on the same data in the same run. GB/s counts the bytes written
(raw); "wire/raw" is the bytes sent over the bytes written (frames sent
uncompressed count as 1). Data, 64 MiB of each (internal/kvdata):

- **bf16**: K/V-like values, normal draws times a log-normal scale per
  channel (1,024 channels), 2% of the channels twenty times larger,
  rounded to bf16; compressed with the byte-plane shuffle for 2-byte
  elements (`compress_elem_size` 2).
- **fp8**: the same values scaled into e4m3 (fp8) bytes; no shuffle.
- **random**: incompressible bytes, shuffle on (what a bf16 setting meets on
  data that does not compress).

The links: two network namespaces joined by a veth pair, both directions
shaped with `tc qdisc ... tbf` (this kernel has no netem), initiator in
one, target in the other; then loopback, where the last line compares auto
with off over adjacent pairs of runs (load from elsewhere hits both halves
of a pair alike). Both ends share this VM's two cores with other jobs:
compression here runs at a fraction of a quiet server's speed (the auto
column shows what its samples measured), so compressing stops paying at a
slower link here than it would there; auto measures that where it runs.
"""


def main() -> None:
    tables, page = sys.argv[1], sys.argv[2]
    body = open(tables).read().strip()
    text = open(page).read()
    section = f"{BEGIN}\n{INTRO}\n{body}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        if KEEP not in text:
            text = text.rstrip("\n") + "\n\n" + KEEP + "\n"
        text = text.rstrip("\n") + "\n\n" + section
    with open(page, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
