"""Draws the curve of a mori-soak run from its CSV (mori-soak -csv FILE).

    scripts/plot-soak.sh soak.csv docs/img/soak.png "title"

Five panels over elapsed time: RSS, live heap, goroutines, open
descriptors, transfers per second. The soak is about flatness, so the
y axes start at zero.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("rss_mib", "RSS (MiB)"),
    ("live_heap_mib", "live heap (MiB)"),
    ("goroutines", "goroutines"),
    ("fds", "open descriptors"),
    ("transfers_per_s", "transfers/s"),
]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "mori-soak"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 3:
        sys.exit(f"{src}: {len(rows)} samples, too few to draw")
    # The first row is taken before the load starts, the last after it
    # stopped: both are left out of the curves.
    rows = rows[1:-1]
    minutes = [float(r["elapsed_s"]) / 60 for r in rows]
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(8, 10), sharex=True)
    for ax, (col, label) in zip(axes, PANELS):
        ys = [float(r[col]) for r in rows]
        ax.plot(minutes, ys, lw=1.2)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(ys) * 1.15 or 1)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("elapsed (minutes)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"{out}: {len(rows)} samples")


if __name__ == "__main__":
    main()
