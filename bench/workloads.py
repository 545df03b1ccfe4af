"""The workloads of bench/run.py: lists of (local offset, remote offset,
size) ranges, one list per target engine ("peer").

Plain sweeps use ranges of one size, placed in slots of ``size + 64`` bytes
(so no two ranges touch and nothing can be merged); the local slots are in
order, the remote ones a seeded random permutation, as a decode server's
free pages are.

KV shapes follow SGLang's KV pools: one buffer per layer (K and V apart for
GQA), holding ``pool`` tokens (or pages) of the per-token (per-page) size;
the prefill request occupies consecutive slots, the decode side random
free slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

GAP = 64
KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Workload:
    name: str
    section: str
    peers: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # (lo, ro, sz) per peer, uint64
    note: str = ""
    range_size: int = 0  # the range size for plots (0: mixed)
    tags: dict = field(default_factory=dict)

    @property
    def nranges(self) -> int:
        return sum(len(p[0]) for p in self.peers)

    @property
    def nbytes(self) -> int:
        return int(sum(int(p[2].sum()) for p in self.peers))

    def src_extent(self) -> int:
        return max(int((p[0] + p[2]).max()) for p in self.peers)

    def dst_extent(self, peer: int) -> int:
        if peer >= len(self.peers):
            return 0
        p = self.peers[peer]
        return int((p[1] + p[2]).max())

    def write(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"MGBL")
            f.write(len(self.peers).to_bytes(4, "little"))
            for lo, ro, sz in self.peers:
                f.write(len(lo).to_bytes(8, "little"))
                f.write(np.ascontiguousarray(np.stack([lo, ro, sz], axis=1), dtype="<u8").tobytes())


def u64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64)


def uniform(name: str, section: str, size: int, count: int, peers: int = 1, seed: int = 1) -> Workload:
    """count ranges of size bytes, split evenly over peers."""
    rng = np.random.default_rng(seed)
    slot = size + GAP
    out = []
    per = [count // peers + (1 if i < count % peers else 0) for i in range(peers)]
    base = 0
    for n in per:
        idx = np.arange(base, base + n, dtype=np.uint64)  # local slots, shared source buffer
        remote = rng.permutation(n).astype(np.uint64)
        out.append((idx * np.uint64(slot), remote * np.uint64(slot), np.full(n, size, dtype=np.uint64)))
        base += n
    return Workload(name, section, out, range_size=size)


def fmt_size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def kv_layers(name: str, bufs: int, unit: int, pool: int, req: int, seed: int, note: str) -> Workload:
    """A request of ``req`` units (tokens or pages) of ``unit`` bytes in each
    of ``bufs`` per-layer buffers of ``pool`` units: one range per (buffer,
    unit)."""
    rng = np.random.default_rng(seed)
    src_slots = np.arange(req, dtype=np.uint64)  # prefill: a fresh request, consecutive slots
    lo, ro = [], []
    for b in range(bufs):
        dst_slots = rng.choice(pool, size=req, replace=False).astype(np.uint64)
        lo.append(np.uint64(b * pool * unit) + src_slots * np.uint64(unit))
        ro.append(np.uint64(b * pool * unit) + dst_slots * np.uint64(unit))
    lo, ro = np.concatenate(lo), np.concatenate(ro)
    return Workload(name, "kv", [(lo, ro, np.full(len(lo), unit, dtype=np.uint64))], note=note, range_size=unit)


def kv_tp_slice(name: str, layers: int, heads: int, head_bytes: int, dst_tp: int, tokens: int, pool: int,
                seed: int, note: str) -> Workload:
    """Prefill TP1 -> decode TP ``dst_tp``, page size 1: each decode rank (one
    target engine each) gets, per layer, per K and V, per token, the slice of
    heads it owns: heads/dst_tp heads out of a prefill token slot holding all
    heads."""
    rng = np.random.default_rng(seed)
    src_tok = heads * head_bytes
    part = src_tok // dst_tp
    bufs = 2 * layers
    peers = []
    for r in range(dst_tp):
        lo, ro = [], []
        for b in range(bufs):
            s = np.arange(tokens, dtype=np.uint64)
            d = rng.choice(pool, size=tokens, replace=False).astype(np.uint64)
            lo.append(np.uint64(b * pool * src_tok + r * part) + s * np.uint64(src_tok))
            ro.append(np.uint64(b * pool * part) + d * np.uint64(part))
        lo, ro = np.concatenate(lo), np.concatenate(ro)
        peers.append((lo, ro, np.full(len(lo), part, dtype=np.uint64)))
    return Workload(name, "kv", peers, note=note, range_size=part)


SIZE_SWEEP = [  # (range size, ranges per batch)
    (1 * KiB, 8192), (4 * KiB, 4096), (16 * KiB, 2048), (64 * KiB, 512), (256 * KiB, 128),
    (1 * MiB, 32), (4 * MiB, 8), (16 * MiB, 2), (64 * MiB, 1),
]
BATCH_SWEEP = [1, 10, 100, 1000, 10000]


def full() -> List[Workload]:
    w = []
    for size, n in SIZE_SWEEP:
        w.append(uniform(f"{fmt_size(size)} x {n}", "size", size, n))
    for n in BATCH_SWEEP:
        x = uniform(f"4 KiB x {n}", "batch", 4 * KiB, n)
        x.tags["batch"] = n
        w.append(x)
    # DeepSeek-V3: MLA, 61 layers, one latent of 576 bf16 (1152 B) per token.
    w.append(kv_layers("DeepSeek-V3 MLA, page 1, 128 tokens", 61, 576 * 2, 1024, 128, 11,
                       "61 layers x 128 tokens: one 1152 B range per (layer, token); decode slots random in a "
                       "1024-token pool"))
    w.append(kv_layers("DeepSeek-V3 MLA, page 64, 512 tokens", 61, 64 * 576 * 2, 32, 8, 12,
                       "61 layers x 8 pages of 64 tokens: one 72 KiB range per (layer, page); decode pages "
                       "random in a 32-page pool"))
    # Llama-3-70B: GQA, 80 layers, K and V apart, 8 KV heads x 128 x bf16 = 2 KiB per token.
    w.append(kv_layers("Llama-3-70B GQA, page 16, 128 tokens", 160, 16 * 8 * 128 * 2, 16, 8, 13,
                       "80 layers x (K, V) x 8 pages of 16 tokens: one 32 KiB range per (layer, K/V, page); "
                       "decode pages random in a 16-page pool"))
    w.append(kv_tp_slice("Llama-3-70B, TP1 -> TP2, page 1, 32 tokens", 80, 8, 128 * 2, 2, 32, 64, 14,
                         "prefill TP1 to 2 decode engines (TP2): per (layer, K/V, token) a 1 KiB range with "
                         "half of the 8 KV heads; 5120 ranges to each of 2 targets"))
    w.append(uniform("1 MiB x 32 over 4 targets", "peers", 1 * MiB, 32, peers=4))
    w.append(uniform("4 KiB x 4096 over 4 targets", "peers", 4 * KiB, 4096, peers=4))
    w.append(uniform("72 KiB x 488 over 4 targets", "peers", 64 * 576 * 2, 488, peers=4))
    return w


def conns() -> List[Workload]:
    return [uniform("1 MiB x 32", "conns", 1 * MiB, 32), uniform("4 KiB x 4096", "conns", 4 * KiB, 4096)]


def smoke() -> List[Workload]:
    return [uniform("1 MiB x 16", "size", 1 * MiB, 16), uniform("4 KiB x 2048", "size", 4 * KiB, 2048),
            uniform("1 KiB x 1000 over 2 targets", "peers", 1 * KiB, 1000, peers=2)]
