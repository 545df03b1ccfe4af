"""Drive SGLang's own mori PD classes in real prefill and decode processes.

Each role (prefill or decode, one process per TP rank) runs in its own
process, started with multiprocessing ``spawn`` as SGLang starts its
schedulers, or forked from a ``forkserver`` that imported SGLang once (the
tests: SGLang's imports cost about 30 s of CPU per process). A process does
what SGLang's scheduler does before and around a KV transfer, with SGLang's
own code throughout:

* publishes a ``ServerArgs`` (``--disaggregation-mode prefill|decode
  --disaggregation-transfer-backend mori``) into SGLang's runtime context,
* states its process groups the way SGLang's own tests do
  (``sglang/test/parallel_groups.py``): the transfer path runs no collective
  and only reads ``pp_group.is_last_rank``,
* allocates the KV cache with SGLang's own pools (``MLATokenToKVPool`` or
  ``MHATokenToKVPool``, here on ``device="cpu"``) and the aux buffers with
  SGLang's ``MetadataBuffers``; hybrid-model state components are added with
  SGLang's ``append_state_component``,
* fills ``KVArgs`` the way ``disaggregation/prefill.py`` and ``decode.py`` do,
* prefill rank 0 runs the bootstrap server (``MoriKVBootstrapServer``, i.e.
  ``CommonKVBootstrapServer``) as SGLang's launcher does,
* creates ``MoriKVManager`` and a ``MoriKVSender`` (prefill) or
  ``MoriKVReceiver`` (decode) for one request and drives it through
  ``KVPoll`` the way the scheduler's queues do.

Nothing of SGLang or of ``mori/conn.py`` is replaced; ``import mori.io`` is
served by the sglang-mori-go wheel installed in the same environment.

The prefill side fills its buffers with bytes derived from a seed; the
decode side derives the same bytes and checks every page, aux row and state
slot it received, and that nothing outside them was written.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import socket
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

# --------------------------------------------------------------------------
# Configuration shared by parent and children (plain data, picklable).


@dataclasses.dataclass
class PDConfig:
    # model shape
    mla: bool = True
    layers: int = 4
    page_size: int = 16
    num_tokens: int = 1000  # tokens of the one request
    pool_tokens: int = 2048  # KV pool size per rank, in tokens
    kv_lora_rank: int = 512  # MLA: 512 + 64 = 576 values per token
    qk_rope_head_dim: int = 64
    total_kv_heads: int = 8  # MHA
    head_dim: int = 64  # MHA
    # parallelism
    prefill_tp: int = 1
    decode_tp: int = 1
    # what moves
    hybrid_state: bool = False  # add a mamba and a swa state component
    aux_rdma: bool = False  # SGLANG_MORI_SEND_AUX_RDMA
    chunks: int = 1  # sender.send() calls per request (chunked prefill)
    requests: int = 1  # concurrent requests (rooms room, room+1, ...), <= 8
    seed: int = 1234
    room: int = 4242
    # ports (filled by PDRun)
    bootstrap_port: int = 0
    # failure injection: "decode_killed" makes prefill stop after the first
    # chunk until the parent has killed the decode processes.
    fault: Optional[str] = None
    # timeouts (seconds)
    step_timeout: float = 60.0
    # extra environment for the children, and per role ("prefill"/"decode")
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    role_env: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    # verify byte for byte on decode (the demo can time without it)
    verify: bool = True
    quiet: bool = True
    # "module:function" run in each role process in place of the standard
    # request flow (python/tests/sglang/pd_paths.py), with its own parameters.
    scenario: Optional[str] = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_pages(self) -> int:
        return (self.num_tokens + self.page_size - 1) // self.page_size

    @property
    def pool_pages(self) -> int:
        return self.pool_tokens // self.page_size


_given_ports: set = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range, so that the sockets
    the role processes bind to port 0 (ZMQ, mori-go) cannot take it before
    its owner (bootstrap server, torch.distributed store) binds it."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(1000):
        port = rng.randrange(max(1024, low - 12000), low)
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port")


# --------------------------------------------------------------------------
# Deterministic content, computed the same way on both sides.


def page_maps(cfg: PDConfig, req: int = 0):
    """Prefill source pages and decode destination pages of request `req`.

    Both are sorted subsets of the pools (page 0 is SGLang's padding page and
    never used), so the transfer has long contiguous runs broken by gaps, as a
    real page allocator produces. Requests get disjoint pages.
    """
    import numpy as np

    rng = np.random.default_rng(cfg.seed)
    avail = np.arange(1, cfg.pool_pages, dtype=np.int64)
    n = cfg.num_pages
    total = n * cfg.requests
    assert total <= len(avail), "pool too small for the requests"
    src_all = rng.choice(avail, size=total, replace=False)
    dst_all = rng.choice(avail, size=total, replace=False)
    src = np.sort(src_all[req * n : (req + 1) * n]).astype(np.int32)
    dst = np.sort(dst_all[req * n : (req + 1) * n]).astype(np.int32)
    return src, dst


def aux_rows(req: int):
    """(prefill, decode) MetadataBuffers rows of request `req`."""
    return (3 + req) % 8, (5 + req) % 8


def state_maps(cfg: PDConfig):
    """Hybrid state: one mamba slot per request, and the SWA window pages."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed + 7)
    mamba_src = np.array([int(rng.integers(0, MAMBA_SLOTS))], dtype=np.int32)
    mamba_dst = np.array([int(rng.integers(0, MAMBA_SLOTS))], dtype=np.int32)
    avail = np.arange(1, SWA_POOL_PAGES, dtype=np.int64)
    swa_src = np.sort(rng.choice(avail, SWA_WINDOW_PAGES, replace=False)).astype(
        np.int32
    )
    swa_dst = np.sort(rng.choice(avail, SWA_WINDOW_PAGES, replace=False)).astype(
        np.int32
    )
    return (mamba_src, swa_src), (mamba_dst, swa_dst)


MAMBA_LAYERS = 3
MAMBA_SLOTS = 8
MAMBA_CONV_BYTES = 4 * 1024  # one slot's conv state, per layer
MAMBA_TEMPORAL_BYTES = 16 * 1024  # one slot's ssm state, per layer
SWA_LAYERS = 2
SWA_POOL_PAGES = 64
SWA_WINDOW_PAGES = 5
SENTINEL = 0xA5


def pattern(shape_bytes: int, *key: int):
    import numpy as np

    return np.random.default_rng([*key]).integers(
        0, 256, size=shape_bytes, dtype=np.uint8
    )


def as_bytes(tensor):
    """uint8 numpy view of a contiguous CPU torch tensor (no copy)."""
    import torch

    return tensor.view(-1).view(torch.uint8).numpy()


def addr_bytes(ptr: int, n: int):
    import ctypes

    import numpy as np

    return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))


# --------------------------------------------------------------------------
# Child process side.


class _Ctx:
    """What one role process built (pools, manager, queues)."""


def _log(cfg, role, rank, msg):
    if not cfg.quiet:
        print(f"[{role}{rank} pid {os.getpid()}] {msg}", flush=True)


def _publish(cfg: PDConfig, role: str, rank: int):
    from sglang.srt.runtime_context import SpawnRanks, publish
    from sglang.srt.server_args import ServerArgs

    tp = cfg.prefill_tp if role == "prefill" else cfg.decode_tp
    server_args = ServerArgs(
        model_path="dummy",
        host="127.0.0.1",
        device="cpu",
        tp_size=tp,
        page_size=cfg.page_size,
        disaggregation_mode=role,
        disaggregation_transfer_backend="mori",
        disaggregation_bootstrap_port=cfg.bootstrap_port,
    )
    # As SGLang's launcher: one scheduler process per TP rank, GPU = rank.
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=rank, gpu_id=rank))
    return server_args


def init_groups(pp_group=None):
    """Process-group metadata, the way SGLang's own tests do it
    (sglang/test/parallel_groups.py) for code that reads groups but runs no
    collective: the KV transfer path only reads pp_group.is_last_rank (and
    the TP ranks and sizes published above). Real groups would need NCCL for
    TP > 1 (GroupCoordinator creates a PyNccl communicator). pp_group may be
    given (PP > 1 needs its broadcast_object: pd_roles.StorePPGroup)."""
    from types import SimpleNamespace

    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    groups = {
        f"{name}_group": SimpleNamespace(
            rank_in_group=getattr(parallel, f"{name}_rank"),
            world_size=getattr(parallel, f"{name}_size"),
        )
        for name in ("tp", "attn_tp")
    }
    groups["pp_group"] = pp_group or SimpleNamespace(
        rank_in_group=0, world_size=1, is_first_rank=True, is_last_rank=True
    )
    parallel.override_permanently(**groups)


def _build_pool(cfg: PDConfig, tp: int):
    import torch
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, MLATokenToKVPool

    if cfg.mla:
        return MLATokenToKVPool(
            size=cfg.pool_tokens,
            page_size=cfg.page_size,
            dtype=torch.bfloat16,
            kv_lora_rank=cfg.kv_lora_rank,
            qk_rope_head_dim=cfg.qk_rope_head_dim,
            layer_num=cfg.layers,
            device="cpu",
            enable_memory_saver=False,
        )
    assert cfg.total_kv_heads % tp == 0
    return MHATokenToKVPool(
        size=cfg.pool_tokens,
        page_size=cfg.page_size,
        dtype=torch.bfloat16,
        head_num=cfg.total_kv_heads // tp,
        head_dim=cfg.head_dim,
        layer_num=cfg.layers,
        device="cpu",
        enable_memory_saver=False,
        enable_alt_stream=False,
    )


def _kv_tensors(cfg: PDConfig, pool):
    """The per-entry tensors in kv_data_ptrs order (MLA: layers; MHA: K..., V...)."""
    if cfg.mla:
        return list(pool.kv_buffer)
    return list(pool.k_buffer) + list(pool.v_buffer)


def _state_tensors():
    import torch

    mamba = [
        torch.zeros(MAMBA_SLOTS, MAMBA_CONV_BYTES, dtype=torch.uint8)
        for _ in range(MAMBA_LAYERS)
    ] + [
        torch.zeros(MAMBA_SLOTS, MAMBA_TEMPORAL_BYTES, dtype=torch.uint8)
        for _ in range(MAMBA_LAYERS)
    ]
    swa = [
        torch.zeros(SWA_POOL_PAGES, 2048, dtype=torch.uint8) for _ in range(SWA_LAYERS)
    ]
    return mamba, swa


def _build_kv_args(cfg, role, rank, pool, metadata_buffers, state_tensors):
    """KVArgs as disaggregation/prefill.py and decode.py fill them."""
    from sglang.srt.disaggregation.base.conn import StateType
    from sglang.srt.disaggregation.utils import (
        KVClassType,
        TransferBackend,
        append_state_component,
        build_kv_layer_ids,
        get_kv_class,
        get_kv_transfer_buf_infos,
        get_pd_kv_layout,
        setup_state_kv_args,
    )
    from sglang.srt.runtime_context import get_device, get_disagg, get_parallel

    kv_args = get_kv_class(TransferBackend.MORI, KVClassType.KVARGS)()
    kv_args.engine_rank = rank % get_parallel().attn_tp_size
    kv_args.pp_rank = 0
    kv_args.system_dp_rank = get_parallel().dp_rank
    kv_args.rust_http_port = None
    kv_args.kv_cache_dtype_str = "bfloat16"
    kv_args.kv_layout = get_pd_kv_layout(pool)
    kv_args.prefill_start_layer = pool.start_layer
    ptrs, lens, item_lens = get_kv_transfer_buf_infos(pool)
    kv_args.prefill_end_layer = getattr(pool, "end_layer", None)
    kv_args.kv_data_ptrs = ptrs
    kv_args.kv_data_lens = lens
    kv_args.kv_item_lens = item_lens
    kv_args.num_draft_entries = 0
    kv_args.kv_layer_ids = build_kv_layer_ids(
        token_to_kv_pool=pool,
        draft_token_to_kv_pool=None,
        num_draft_entries=0,
        num_hidden_layers=cfg.layers,
    )
    if not cfg.mla:
        kv_args.kv_head_num = pool.head_num
        kv_args.total_kv_head_num = cfg.total_kv_heads
    kv_args.page_size = pool.page_size
    (
        kv_args.aux_data_ptrs,
        kv_args.aux_data_lens,
        kv_args.aux_item_lens,
    ) = metadata_buffers.get_buf_infos()
    kv_args.ib_device = get_disagg().disaggregation_ib_device
    kv_args.gpu_id = get_device().gpu_id
    setup_state_kv_args(kv_args, pool, None, cfg.layers)
    if state_tensors is not None:
        # What setup_state_kv_args appends for a hybrid model: a MAMBA
        # component (conv + temporal state per mamba layer, one item per
        # request slot) and a SWA component (one item per SWA page).
        mamba, swa = state_tensors
        append_state_component(
            kv_args,
            StateType.MAMBA,
            [t.data_ptr() for t in mamba],
            [t.numel() for t in mamba],
            [t.shape[1] for t in mamba],
        )
        append_state_component(
            kv_args,
            StateType.SWA,
            [t.data_ptr() for t in swa],
            [t.numel() for t in swa],
            [t.shape[1] for t in swa],
        )
    return kv_args


def _metadata_buffers(server_args):
    import torch
    from sglang.srt.disaggregation.utils import MetadataBuffers

    return MetadataBuffers(
        8,
        hidden_size=256,
        hidden_states_dtype=torch.bfloat16,
        max_sampling_mask_tokens=server_args.sampling_mask_max_tokens,
    )


def _fill_prefill(cfg, rank, pool, metadata_buffers, state_tensors):
    # MLA's latent KV is replicated on every TP rank; MHA ranks hold
    # different heads.
    key_rank = 0 if cfg.mla else rank
    for i, t in enumerate(_kv_tensors(cfg, pool)):
        b = as_bytes(t)
        b[:] = pattern(b.size, cfg.seed, key_rank, i)
    ptrs, _, item_lens = metadata_buffers.get_buf_infos()
    for req in range(cfg.requests):
        row = aux_rows(req)[0]
        for j, (p, n) in enumerate(zip(ptrs, item_lens)):
            # Replicated output on every prefill TP rank: rank-independent bytes.
            addr_bytes(p + row * n, n)[:] = pattern(n, cfg.seed, 99, j, req)
    if state_tensors is not None:
        mamba, swa = state_tensors
        for i, t in enumerate(mamba + swa):
            b = as_bytes(t)
            b[:] = pattern(b.size, cfg.seed, 77, rank, i)


def _fill_sentinel(cfg, pool, metadata_buffers, state_tensors):
    for t in _kv_tensors(cfg, pool):
        as_bytes(t)[:] = SENTINEL
    ptrs, lens, _ = metadata_buffers.get_buf_infos()
    for p, n in zip(ptrs, lens):
        addr_bytes(p, n)[:] = SENTINEL
    if state_tensors is not None:
        for t in state_tensors[0] + state_tensors[1]:
            as_bytes(t)[:] = SENTINEL


def _verify_decode(cfg, rank, pool, metadata_buffers, state_tensors) -> Dict[str, Any]:
    """Check every received byte and that nothing else changed."""
    import numpy as np

    maps = [page_maps(cfg, req) for req in range(cfg.requests)]
    ps = cfg.page_size
    checked = 0
    entries = _kv_tensors(cfg, pool)
    n_layers_entries = len(entries)
    dst_mask = np.zeros(cfg.pool_pages + 1, dtype=bool)
    for _, dst_pages in maps:
        dst_mask[dst_pages] = True
    for i, t in enumerate(entries):
        # t: [rows, heads_local, dim] (MHA) or [rows, 1, 576] (MLA), bf16.
        got = as_bytes(t).reshape(t.shape[0], -1)
        row_bytes = got.shape[1]
        if cfg.mla:
            # Every decode rank gets the whole latent (MLA is replicated).
            src_rank = 0
            src = pattern(t.numel() * 2, cfg.seed, src_rank, i).reshape(t.shape[0], -1)
            expect_rows = src
        else:
            # Decode rank `rank` holds heads [rank*hd, (rank+1)*hd) of the
            # model; prefill rank p holds [p*hp, (p+1)*hp).
            hd = cfg.total_kv_heads // cfg.decode_tp
            hp = cfg.total_kv_heads // cfg.prefill_tp
            head_bytes = cfg.head_dim * 2
            expect_rows = np.empty_like(got)
            cache = {}
            for h_local in range(hd):
                h = rank * hd + h_local
                p = h // hp
                if p not in cache:
                    n_src = t.shape[0] * hp * head_bytes
                    cache[p] = pattern(n_src, cfg.seed, p, i).reshape(t.shape[0], -1)
                ph = h % hp
                expect_rows[:, h_local * head_bytes : (h_local + 1) * head_bytes] = cache[
                    p
                ][:, ph * head_bytes : (ph + 1) * head_bytes]
        for req, (src_pages, dst_pages) in enumerate(maps):
            for k in range(cfg.num_pages):
                s, d = int(src_pages[k]), int(dst_pages[k])
                # the last page may be partial: SGLang still moves whole pages
                a = got[d * ps : (d + 1) * ps]
                e = expect_rows[s * ps : (s + 1) * ps]
                if not np.array_equal(a, e):
                    bad = np.argwhere(a != e)[0]
                    raise AssertionError(
                        f"request {req} kv entry {i} page {k} (src {s} -> dst {d}) differs at "
                        f"token {bad[0]} byte {bad[1]}: got {a[tuple(bad)]} want {e[tuple(bad)]}"
                    )
                checked += a.size
        # untouched rows
        pages_view = got[: cfg.pool_pages * ps].reshape(cfg.pool_pages, ps * row_bytes)
        mask = dst_mask[: cfg.pool_pages]
        untouched = pages_view[~mask]
        if untouched.size and not (untouched == SENTINEL).all():
            raise AssertionError(f"kv entry {i}: bytes outside the destination pages changed")
    out = {"kv_bytes_checked": checked, "kv_entries": n_layers_entries}

    ptrs, lens, item_lens = metadata_buffers.get_buf_infos()
    aux_checked = 0
    dst_rows = [aux_rows(req)[1] for req in range(cfg.requests)]
    for j, (p, n_total, n) in enumerate(zip(ptrs, lens, item_lens)):
        buf = addr_bytes(p, n_total).reshape(-1, n)
        for req, row in enumerate(dst_rows):
            if not np.array_equal(buf[row], pattern(n, cfg.seed, 99, j, req)):
                raise AssertionError(f"aux buffer {j} row {row} (request {req}) differs")
            aux_checked += n
        others = np.delete(buf, dst_rows, axis=0)
        if not (others == SENTINEL).all():
            raise AssertionError(f"aux buffer {j}: rows other than {dst_rows} changed")
    out["aux_bytes_checked"] = aux_checked

    if state_tensors is not None:
        (m_src, swa_src), (m_dst, swa_dst) = state_maps(cfg)
        mamba, swa = state_tensors
        st_checked = 0
        for i, t in enumerate(mamba):
            got = as_bytes(t).reshape(t.shape)
            e = pattern(t.numel(), cfg.seed, 77, 0, i).reshape(t.shape)
            if not np.array_equal(got[m_dst[0]], e[m_src[0]]):
                raise AssertionError(f"mamba tensor {i} slot {m_dst[0]} differs")
            others = np.delete(got, m_dst[0], axis=0)
            if not (others == SENTINEL).all():
                raise AssertionError(f"mamba tensor {i}: other slots changed")
            st_checked += t.shape[1]
        for i, t in enumerate(swa):
            got = as_bytes(t).reshape(t.shape)
            e = pattern(t.numel(), cfg.seed, 77, 0, len(mamba) + i).reshape(t.shape)
            if not np.array_equal(got[swa_dst], e[swa_src]):
                raise AssertionError(f"swa tensor {i} window pages differ")
            others = np.delete(got, swa_dst, axis=0)
            if not (others == SENTINEL).all():
                raise AssertionError(f"swa tensor {i}: other pages changed")
            st_checked += t.shape[1] * len(swa_dst)
        out["state_bytes_checked"] = st_checked
    return out


def _wait_poll(obj, want, timeout, what):
    from sglang.srt.disaggregation.base.conn import KVPoll

    deadline = time.monotonic() + timeout
    seen = []
    while True:
        st = obj.poll()
        if not seen or seen[-1] != st:
            seen.append(st)
        if st in want or st == KVPoll.Failed:
            return st, seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still {st} after {timeout}s (states {seen})")
        time.sleep(0.002)


def role_main(role: str, rank: int, cfg: PDConfig, results, control) -> None:
    """Entry point of a spawned prefill or decode process."""
    try:
        import faulthandler

        # PDRun dumps every thread of a role process that misses a deadline.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        for k, v in {**cfg.env, **cfg.role_env.get(role, {})}.items():
            os.environ[k] = v
        os.environ.setdefault("SGLANG_HOST_IP", "127.0.0.1")
        if cfg.aux_rdma:
            os.environ["SGLANG_MORI_SEND_AUX_RDMA"] = "1"
        if cfg.quiet:
            import warnings

            warnings.filterwarnings("ignore")
        if cfg.scenario:
            import importlib

            module, func = cfg.scenario.split(":")
            getattr(importlib.import_module(module), func)(role, rank, cfg, results, control)
        else:
            _run_role(role, rank, cfg, results, control)
    except BaseException as e:  # report everything to the parent
        results.put((role, rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise SystemExit(1)


def _run_role(role, rank, cfg, results, control):
    t0 = time.monotonic()
    import torch  # noqa: F401  (SGLang needs it; import before timing)

    server_args = _publish(cfg, role, rank)
    init_groups()
    from sglang.srt.disaggregation.base.conn import KVPoll
    from sglang.srt.disaggregation.utils import (
        DisaggregationMode,
        KVClassType,
        TransferBackend,
        get_kv_class,
    )

    import mori.io

    tp = cfg.prefill_tp if role == "prefill" else cfg.decode_tp
    pool = _build_pool(cfg, tp)
    mbufs = _metadata_buffers(server_args)
    state_tensors = _state_tensors() if cfg.hybrid_state else None
    if role == "prefill":
        _fill_prefill(cfg, rank, pool, mbufs, state_tensors)
    else:
        _fill_sentinel(cfg, pool, mbufs, state_tensors)
    kv_args = _build_kv_args(cfg, role, rank, pool, mbufs, state_tensors)
    bootstrap_addr = f"127.0.0.1:{cfg.bootstrap_port}"
    manager_cls = get_kv_class(TransferBackend.MORI, KVClassType.MANAGER)

    if role == "prefill":
        if rank == 0:
            # SGLang's launcher starts the bootstrap server next to rank 0.
            server_cls = get_kv_class(TransferBackend.MORI, KVClassType.BOOTSTRAP_SERVER)
            bootstrap = server_cls(host="127.0.0.1", port=cfg.bootstrap_port)  # noqa: F841
        _wait_http(f"http://{bootstrap_addr}/health", cfg.step_timeout)
        mgr = manager_cls(kv_args, DisaggregationMode.PREFILL, server_args, cfg.mla)
        results.put((role, rank, "ready", {
            "startup_s": time.monotonic() - t0,
            "engine_key": mgr.engine_desc.key,
            "mori_module": getattr(mori.io, "__file__", "?"),
            "mori_go": bool(getattr(sys.modules.get("mori"), "__mori_go__", False)),
        }))
        sender_cls = get_kv_class(TransferBackend.MORI, KVClassType.SENDER)
        rooms = [cfg.room + r for r in range(cfg.requests)]
        senders = [
            sender_cls(mgr=mgr, bootstrap_addr=bootstrap_addr, bootstrap_room=room)
            for room in rooms
        ]
        seen = []
        for sender in senders:
            st, seen = _wait_poll(sender, (KVPoll.WaitingForInput,), cfg.step_timeout, "prefill bootstrap")
            if st == KVPoll.Failed:
                results.put((role, rank, "done", {"status": int(st), "states": seen, "reason": mgr.failure_records.get(sender.bootstrap_room)}))
                control.wait(cfg.step_timeout)
                return
        state_idx = None
        if cfg.hybrid_state:
            assert cfg.requests == 1
            (m_src, swa_src), _ = state_maps(cfg)
            state_idx = [m_src, swa_src]
        src = [page_maps(cfg, req)[0] for req in range(cfg.requests)]
        for req, sender in enumerate(senders):
            sender.init(len(src[req]), aux_rows(req)[0])
        bounds = [round(i * cfg.num_pages / cfg.chunks) for i in range(cfg.chunks + 1)]
        t_send = time.perf_counter()
        # Like the scheduler: each forward pass sends the next chunk of every
        # request in the batch; the transfer workers (one per shard, shard =
        # room % SGLANG_MORI_TRANSFER_SHARDS) submit them concurrently.
        for c in range(cfg.chunks):
            last = c == cfg.chunks - 1
            for req, sender in enumerate(senders):
                sender.send(
                    src[req][bounds[c] : bounds[c + 1]],
                    state_indices=state_idx if last else None,
                )
            if cfg.fault == "decode_killed" and c == 0:
                results.put((role, rank, "first_chunk_sent", {}))
                # The parent kills the decode side now and sets control.
                if not control.wait(cfg.step_timeout):
                    raise TimeoutError("parent never signalled the kill")
        st, seen2, reason = KVPoll.Success, [], None
        for sender in senders:
            st_r, seen_r = _wait_poll(sender, (KVPoll.Success,), cfg.step_timeout, "prefill transfer")
            if not seen2:
                seen2 = seen_r
            if st_r == KVPoll.Failed and st != KVPoll.Failed:
                st, seen2 = st_r, seen_r
                reason = mgr.failure_records.get(sender.bootstrap_room)
                try:
                    sender.failure_exception()
                except Exception as e:  # SGLang raises KVTransferError here
                    reason = f"{type(e).__name__}: {e}"
        elapsed = time.perf_counter() - t_send
        info = {"status": int(st), "states": seen + seen2, "seconds": elapsed, "reason": reason,
                # which aux path conn.py took (SGLANG_MORI_SEND_AUX_RDMA)
                "aux_by_batch_write": getattr(mgr, "_send_aux_rdma", None)}
        # mori-go extras (real MORI-IO has neither): the data plane in use and
        # the engine's counters.
        engine = mgr.engine
        if hasattr(engine, "backend_type"):
            try:
                bt = engine.backend_type  # a property in mori-go
                info["backend"] = getattr(bt, "name", str(bt))
                info["stats"] = engine.stats()
            except Exception as e:  # never fail a transfer report on extras
                info["stats_error"] = repr(e)
        results.put((role, rank, "done", info))
        control.wait(cfg.step_timeout)
        return

    # ---- decode ----
    mgr = manager_cls(kv_args, DisaggregationMode.DECODE, server_args, cfg.mla)
    results.put((role, rank, "ready", {"startup_s": time.monotonic() - t0, "engine_key": mgr.engine_desc.key}))
    receiver_cls = get_kv_class(TransferBackend.MORI, KVClassType.RECEIVER)
    rooms = [cfg.room + r for r in range(cfg.requests)]
    receivers = [
        receiver_cls(mgr=mgr, bootstrap_addr=bootstrap_addr, bootstrap_room=room)
        for room in rooms
    ]
    # The bootstrap server comes up with the prefill side; until then
    # SGLang logs each failed try as an error.
    _wait_http(f"http://{bootstrap_addr}/health", cfg.step_timeout)
    deadline = time.monotonic() + cfg.step_timeout
    # DecodePreallocQueue: wait until the prefill side registered its ranks.
    while not mgr.try_ensure_parallel_info(bootstrap_addr):
        if time.monotonic() > deadline:
            raise TimeoutError("prefill parallel info never became available")
        time.sleep(0.2)
    for receiver in receivers:
        receiver.init(0)
    st, seen, failed_room = KVPoll.Success, [], None
    for receiver in receivers:
        st_r, seen = _wait_poll(receiver, (KVPoll.WaitingForInput,), cfg.step_timeout, "decode bootstrap")
        if st_r == KVPoll.Failed:
            st, failed_room = st_r, receiver.bootstrap_room
            break
    if st != KVPoll.Failed:
        state_idx = None
        if cfg.hybrid_state:
            _, (m_dst, swa_dst) = state_maps(cfg)
            state_idx = [m_dst, swa_dst]
        for req, receiver in enumerate(receivers):
            receiver.send_metadata(page_maps(cfg, req)[1], aux_rows(req)[1], state_idx)
        results.put((role, rank, "metadata_sent", {}))
        seen2 = []
        for receiver in receivers:
            st_r, seen_r = _wait_poll(receiver, (KVPoll.Success,), cfg.step_timeout, "decode transfer")
            seen2 = seen2 or seen_r
            if st_r == KVPoll.Failed:
                st, seen2, failed_room = st_r, seen_r, receiver.bootstrap_room
                break
        seen += seen2
    info = {"status": int(st), "states": seen}
    if st == KVPoll.Success and cfg.verify:
        t_v = time.perf_counter()
        info.update(_verify_decode(cfg, rank, pool, mbufs, state_tensors))
        info["verify_s"] = time.perf_counter() - t_v
    elif st == KVPoll.Failed:
        info["reason"] = mgr.failure_records.get(failed_room)
    results.put((role, rank, "done", info))
    control.wait(cfg.step_timeout)


def _wait_http(url, timeout):
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up")
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Parent side.


class _Control:
    """Parent -> children "go on" signal, one pipe per child.

    (A multiprocessing.Event would do, but Event.set() blocks for ever once
    a process that waited on it has been SIGKILLed, which the failure tests
    do.)
    """

    def __init__(self):
        self._writers = []
        self._set = False

    def add(self, ctx):
        r, w = ctx.Pipe(duplex=False)
        self._writers.append(w)
        return r

    def set(self):
        if self._set:
            return
        self._set = True
        for w in self._writers:
            try:
                w.send(b"go")
            except (OSError, ValueError):
                pass

    def close(self):
        for w in self._writers:
            try:
                w.close()
            except OSError:
                pass


class _ResultWriter:
    """Child -> parent reports over the child's own pipe (a queue shared by
    all children is wedged for good when one of them is SIGKILLed holding
    its lock)."""

    def __init__(self, conn):
        self._conn = conn

    def put(self, item):
        self._conn.send(item)


class _ControlReader:
    def __init__(self, conn):
        self._conn = conn
        self._set = False

    def recv(self, timeout: float):
        """The next message PDRun.tell sent this process (scenarios); raises
        TimeoutError when none came in time."""
        if not self._conn.poll(timeout):
            raise TimeoutError(f"no message from the parent in {timeout}s")
        return self._conn.recv()

    def wait(self, timeout=None) -> bool:
        """True once the parent said go (or went away)."""
        if not self._set:
            try:
                self._set = bool(self._conn.poll(timeout))
            except (OSError, EOFError):
                self._set = True
        return self._set

PRELOAD_MODULE = "pd_preload"


class PDRun:
    """Starts prefill and decode processes and collects what they report.

    Use as a context manager: every child is killed on exit, whatever happened.
    """

    def __init__(self, cfg: PDConfig, start_method: str = "spawn"):
        cfg.bootstrap_port = cfg.bootstrap_port or free_port()
        self.cfg = cfg
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # The fork server imports SGLang once (about 30 s of CPU); every
            # role process is then forked from it with SGLang already
            # imported. The mori-go library (and its Go runtime) is never
            # loaded in the fork server: it loads lazily, in the child, at
            # the first IOEngine.
            # Python 3.11's fork server ignores the parent's sys.path, so
            # the preload module is found through PYTHONPATH.
            here = os.path.dirname(os.path.abspath(__file__))
            path = os.environ.get("PYTHONPATH", "")
            if here not in path.split(os.pathsep):
                os.environ["PYTHONPATH"] = here + (os.pathsep + path if path else "")
            self.ctx.set_forkserver_preload([PRELOAD_MODULE])
        self._readers: Dict[Any, tuple] = {}
        self.control = _Control()
        self.procs: Dict[tuple, Any] = {}
        self.events: List[tuple] = []
        self._writers_by_key: Dict[tuple, Any] = {}

    def __enter__(self):
        for r in range(self.cfg.prefill_tp):
            self._start("prefill", r)
        for r in range(self.cfg.decode_tp):
            self._start("decode", r)
        return self

    def _start(self, role, rank):
        reader = self.control.add(self.ctx)
        self._writers_by_key[(role, rank)] = self.control._writers[-1]
        res_r, res_w = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(
            target=role_main,
            args=(role, rank, self.cfg, _ResultWriter(res_w), _ControlReader(reader)),
            name=f"{role}{rank}",
            daemon=True,
        )
        p.start()
        res_w.close()
        self._readers[res_r] = (role, rank)
        self.procs[(role, rank)] = p

    def wait_for(self, kind: str, roles=None, timeout: float = 120.0) -> Dict[tuple, Any]:
        """Wait until every (role, rank) in roles reported `kind`."""
        from multiprocessing.connection import wait

        roles = roles or list(self.procs)
        got = {e[:2]: e[3] for e in self.events if e[2] == kind and e[:2] in roles}
        deadline = time.monotonic() + timeout
        while len(got) < len(roles):
            left = deadline - time.monotonic()
            if left <= 0:
                self.dump_stacks()
                raise TimeoutError(
                    f"timed out waiting for {kind} from {sorted(set(roles) - set(got))}; "
                    f"events so far: {[e[:3] for e in self.events]}"
                )
            for conn in wait(list(self._readers), timeout=min(left, 0.5)):
                key = self._readers[conn]
                try:
                    ev = conn.recv()
                except (EOFError, OSError):
                    # the child is gone (killed, or exited after reporting)
                    del self._readers[conn]
                    if key in roles and key not in got:
                        p = self.procs[key]
                        p.join(5)
                        errs = [e for e in self.events if e[2] == "error"]
                        raise RuntimeError(f"{key} exited (code {p.exitcode}) before {kind}: {errs}")
                    continue
                self.events.append(ev)
                if ev[2] == "error":
                    raise RuntimeError(f"{ev[0]}{ev[1]} failed:\n{ev[3]}")
                if ev[2] == kind and ev[:2] in roles:
                    got[ev[:2]] = ev[3]
        return got

    def dump_stacks(self):
        """Every live role process prints all its threads' stacks (stderr)."""
        for p in self.procs.values():
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGUSR1)
                except OSError:
                    pass
        time.sleep(1.0)

    def kill(self, role):
        for (r, _), p in self.procs.items():
            if r == role and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
        for (r, _), p in self.procs.items():
            if r == role:
                p.join(10)

    def tell(self, key, msg) -> None:
        """Send one message to the role process `key` ((role, rank)); a
        scenario reads it with control.recv()."""
        self._writers_by_key[key].send(msg)

    def role_keys(self, role):
        return [k for k in self.procs if k[0] == role]

    def __exit__(self, *exc):
        self.control.set()
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
        self.control.close()
        for conn in self._readers:
            conn.close()
        return False
