"""Building blocks of the conn.py path scenarios (pd_paths.py): a role
process's SGLang objects in the scenario's parallel layout (Role), the
seeded content of the prefill side and the row-level checks of the decode
side (Checker), and the request steps the schedulers take.

A Role publishes a real ServerArgs (TP, attention DP, PP, DCP,
--disaggregation-ib-device, --enable-pd-role-switch) into SGLang's runtime
context, states the process groups as metadata (PP's one collective goes
over torch's TCPStore: StorePPGroup), allocates SGLang's KV pools (target
and draft), aux rows (MetadataBuffers) and state components
(append_state_component), and fills KVArgs as prefill.py and decode.py
do. Content: KV entry i of the prefill holds pattern(seed, key, i), aux
buffer j pattern(seed, key, 1000 + j), state tensor i of component c
pattern(seed, key, 2000 + 100 c + i); the decode starts from a sentinel.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Dict, Optional

import pd_harness as H

# --------------------------------------------------------------------------
# Building a role (SGLang's objects, the scenario's parallel layout)


def _server_args(cfg, role: str, **kw):
    from sglang.srt.server_args import ServerArgs

    base = dict(
        model_path="dummy",
        host="127.0.0.1",
        device="cpu",
        page_size=cfg.page_size,
        disaggregation_mode=role,
        disaggregation_transfer_backend="mori",
        disaggregation_bootstrap_port=cfg.bootstrap_port,
    )
    base.update(kw)
    return ServerArgs(**base)


def _publish(server_args, world_rank: int, dp_rank: Optional[int] = None):
    from sglang.srt.runtime_context import SpawnRanks, publish

    publish(
        server_args,
        role="scheduler",
        ranks=SpawnRanks(world_rank=world_rank, dp_rank=dp_rank, gpu_id=world_rank),
    )


class StorePPGroup:
    """The one collective conn.py's PP path runs (PPConsensusStore's
    broadcast_object of PP rank 0's address), over torch's TCPStore."""

    def __init__(self, rank: int, size: int, port: int):
        import torch.distributed as dist

        self.rank_in_group = rank
        self.world_size = size
        self.is_first_rank = rank == 0
        self.is_last_rank = rank == size - 1
        self._store = dist.TCPStore(
            "127.0.0.1", port, size, rank == 0, timeout=datetime.timedelta(seconds=60)
        )
        self._n = 0

    def broadcast_object(self, obj, src: int = 0):
        import pickle

        self._n += 1
        key = f"bcast{self._n}"
        if self.rank_in_group == src:
            self._store.set(key, pickle.dumps(obj))
            return obj
        return pickle.loads(self._store.get(key))


def _mla_pool(cfg, layers: int, start_layer: Optional[int] = None, size: Optional[int] = None):
    import torch
    from sglang.srt.mem_cache.memory_pool import MLATokenToKVPool

    kw = {}
    if start_layer is not None:
        kw = dict(start_layer=start_layer, end_layer=start_layer + layers - 1)
    return MLATokenToKVPool(
        size=size or cfg.pool_tokens,
        page_size=cfg.page_size,
        dtype=torch.bfloat16,
        kv_lora_rank=cfg.kv_lora_rank,
        qk_rope_head_dim=cfg.qk_rope_head_dim,
        layer_num=layers,
        device="cpu",
        enable_memory_saver=False,
        **kw,
    )


def _mha_pool(cfg, layers: int, heads: int):
    import torch
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

    return MHATokenToKVPool(
        size=cfg.pool_tokens,
        page_size=cfg.page_size,
        dtype=torch.bfloat16,
        head_num=heads,
        head_dim=cfg.head_dim,
        layer_num=layers,
        device="cpu",
        enable_memory_saver=False,
        enable_alt_stream=False,
    )


def _kv_tensors(pool, mla: bool):
    return list(pool.kv_buffer) if mla else list(pool.k_buffer) + list(pool.v_buffer)


class Role:
    """One role process: pools, aux rows, state tensors, KVArgs, manager."""

    def __init__(self, cfg, role: str, rank: int, *, server_kw=None, world_rank=None,
                 dp_rank=None, pp_group=None, layers=None, start_layer=None,
                 draft_layers: int = 0, draft_tokens: Optional[int] = None, states=None,
                 mha_heads=None, ib_device=None):
        import torch  # noqa: F401

        for k, v in {**cfg.env, **cfg.role_env.get(role, {})}.items():
            os.environ[k] = v
        self.cfg, self.role, self.rank = cfg, role, rank
        self.server_args = _server_args(cfg, role, **(server_kw or {}))
        _publish(self.server_args, rank if world_rank is None else world_rank, dp_rank)
        H.init_groups(pp_group)
        from sglang.srt.runtime_context import get_parallel

        self.parallel = get_parallel()
        self.mla = cfg.mla
        self.layers = layers or cfg.layers
        if self.mla:
            self.pool = _mla_pool(cfg, self.layers, start_layer)
        else:
            self.pool = _mha_pool(cfg, self.layers, mha_heads or cfg.total_kv_heads)
        self.draft = None
        if draft_layers:
            self.draft = _mla_pool(cfg, draft_layers, size=draft_tokens) if self.mla else _mha_pool(cfg, draft_layers, mha_heads or cfg.total_kv_heads)
        self.mbufs = H._metadata_buffers(self.server_args)
        self.states = states or []  # [(StateType, [tensors], extra kwargs)]
        self.kv_args = self._kv_args(ib_device)
        self.mgr = None

    @property
    def kv_entries(self):
        out = _kv_tensors(self.pool, self.mla)
        if self.draft is not None:
            out += _kv_tensors(self.draft, self.mla)
        return out

    def _kv_args(self, ib_device):
        from sglang.srt.disaggregation.utils import (
            KVClassType,
            TransferBackend,
            append_state_component,
            get_kv_class,
            get_pd_kv_layout,
        )
        from sglang.srt.runtime_context import get_device

        kv_args = get_kv_class(TransferBackend.MORI, KVClassType.KVARGS)()
        p = self.parallel
        kv_args.engine_rank = p.attn_tp_rank
        kv_args.pp_rank = p.pp_rank
        kv_args.system_dp_rank = p.dp_rank
        kv_args.rust_http_port = None
        kv_args.kv_cache_dtype_str = "bfloat16"
        kv_args.kv_layout = get_pd_kv_layout(self.pool)
        kv_args.prefill_start_layer = self.pool.start_layer
        ptrs, lens, item_lens = self.pool.get_contiguous_buf_infos()
        kv_args.prefill_end_layer = getattr(self.pool, "end_layer", None)
        num_draft = 0
        if self.draft is not None:
            d_ptrs, d_lens, d_items = self.draft.get_contiguous_buf_infos()
            ptrs, lens, item_lens = ptrs + d_ptrs, lens + d_lens, item_lens + d_items
            num_draft = len(d_ptrs)
        kv_args.kv_data_ptrs, kv_args.kv_data_lens, kv_args.kv_item_lens = ptrs, lens, item_lens
        kv_args.num_draft_entries = num_draft
        kv_args.kv_layer_ids = []  # plain pools: positional pairing, as build_kv_layer_ids gives
        if not self.mla:
            kv_args.kv_head_num = self.pool.head_num
            kv_args.total_kv_head_num = self.cfg.total_kv_heads
        kv_args.page_size = self.pool.page_size
        kv_args.aux_data_ptrs, kv_args.aux_data_lens, kv_args.aux_item_lens = self.mbufs.get_buf_infos()
        if ib_device is None:  # as prefill.py / decode.py: --disaggregation-ib-device
            from sglang.srt.runtime_context import get_disagg

            ib_device = get_disagg().disaggregation_ib_device
        kv_args.ib_device = ib_device
        kv_args.gpu_id = get_device().gpu_id
        for field in ("state_types", "state_data_ptrs", "state_data_lens", "state_item_lens",
                      "state_dim_per_tensor", "state_conv_shard_groups",
                      "state_slice_outer_counts", "state_layer_ids"):
            setattr(kv_args, field, [])
        for st, tensors, extra in self.states:
            append_state_component(
                kv_args, st,
                [t.data_ptr() for t in tensors],
                [t.numel() for t in tensors],
                [t.shape[1] if t.numel() else 0 for t in tensors],
                **extra,
            )
        return kv_args

    def start(self, mode: str):
        from sglang.srt.disaggregation.utils import (
            DisaggregationMode,
            KVClassType,
            TransferBackend,
            get_kv_class,
        )

        addr = f"127.0.0.1:{self.cfg.bootstrap_port}"
        cls = get_kv_class(TransferBackend.MORI, KVClassType.MANAGER)
        dm = DisaggregationMode.PREFILL if mode == "prefill" else DisaggregationMode.DECODE
        if mode == "prefill":
            H._wait_http(f"http://{addr}/health", self.cfg.step_timeout)
        self.mgr = cls(self.kv_args, dm, self.server_args, self.mla)
        return self.mgr

    # ---- content ---------------------------------------------------------

    def fill_prefill(self, key: int, layer_base: int = 0):
        """Every KV entry, aux row and state tensor from pattern(seed, key, ...);
        KV entry i holds pattern index layer_base + i (PP stages: the global
        layer)."""
        for i, t in enumerate(self.kv_entries, start=layer_base):
            b = H.as_bytes(t)
            b[:] = H.pattern(b.size, self.cfg.seed, key, i)
        ptrs, lens, _ = self.mbufs.get_buf_infos()
        for j, (p, n) in enumerate(zip(ptrs, lens)):
            H.addr_bytes(p, n)[:] = H.pattern(n, self.cfg.seed, key, 1000 + j)
        for c, (_, tensors, _) in enumerate(self.states):
            for i, t in enumerate(tensors):
                if t.numel():
                    b = H.as_bytes(t)
                    b[:] = H.pattern(b.size, self.cfg.seed, key, 2000 + 100 * c + i)

    def fill_sentinel(self):
        for t in self.kv_entries:
            H.as_bytes(t)[:] = H.SENTINEL
        ptrs, lens, _ = self.mbufs.get_buf_infos()
        for p, n in zip(ptrs, lens):
            H.addr_bytes(p, n)[:] = H.SENTINEL
        for _, tensors, _ in self.states:
            for t in tensors:
                if t.numel():
                    H.as_bytes(t)[:] = H.SENTINEL


def expected(cfg, t, key: int, index: int):
    return H.pattern(t.numel() * t.element_size(), cfg.seed, key, index).reshape(t.shape[0], -1)


def rows_of(t):
    return H.as_bytes(t).reshape(t.shape[0], -1)


def page_rows(pages, ps: int):
    import numpy as np

    pages = np.asarray(pages, dtype=np.int64)
    return (pages[:, None] * ps + np.arange(ps)[None, :]).reshape(-1)


class Checker:
    """Row-level checks on the decode side; remembers every row written so
    that check_untouched() can prove nothing else changed."""

    def __init__(self):
        self.touched: Dict[int, set] = {}
        self.bytes = 0

    def rows(self, t, got_rows, want, what: str):
        import numpy as np

        got = rows_of(t)
        a = got[np.asarray(got_rows, dtype=np.int64)]
        if not np.array_equal(a, want):
            bad = np.argwhere(a != want)[0]
            raise AssertionError(f"{what}: row {got_rows[bad[0]]} byte {bad[1]}: got {a[tuple(bad)]} want {want[tuple(bad)]}")
        self.touched.setdefault(id(t), set()).update(int(r) for r in got_rows)
        self.bytes += a.size

    def untouched(self, tensors, what: str):
        import numpy as np

        for i, t in enumerate(tensors):
            if not t.numel():
                continue
            got = rows_of(t)
            mask = np.ones(got.shape[0], dtype=bool)
            mask[list(self.touched.get(id(t), ()))] = False
            if not (got[mask] == H.SENTINEL).all():
                r = int(np.argwhere((got != H.SENTINEL).any(axis=1) & mask)[0][0])
                raise AssertionError(f"{what} {i}: row {r} changed though nothing was sent there")


def check_aux(cfg, role: Role, key: int, src_row: int, dst_row: int, chk: Checker, timeout: float = 30.0):
    """The aux row arrived. Over SGLang's ZMQ aux path it may land after the
    Success status (two sockets); SGLang's decode holds the request until
    it has (_apply_metadata_gate), so this waits for it as well."""
    import numpy as np

    ptrs, lens, items = role.mbufs.get_buf_infos()
    deadline = time.monotonic() + timeout
    for j, (p, n, item) in enumerate(zip(ptrs, lens, items)):
        buf = H.addr_bytes(p, n).reshape(-1, item)
        want = H.pattern(n, cfg.seed, key, 1000 + j).reshape(-1, item)[src_row]
        while not np.array_equal(buf[dst_row], want):
            if time.monotonic() > deadline:
                raise AssertionError(f"aux buffer {j} row {dst_row} differs")
            time.sleep(0.01)
        chk.bytes += item


def wait_poll(obj, want, timeout, what):
    return H._wait_poll(obj, want, timeout, what)


def _kv():
    from sglang.srt.disaggregation.base.conn import KVPoll

    return KVPoll


def _classes():
    from sglang.srt.disaggregation.utils import KVClassType, TransferBackend, get_kv_class

    return (
        get_kv_class(TransferBackend.MORI, KVClassType.SENDER),
        get_kv_class(TransferBackend.MORI, KVClassType.RECEIVER),
        get_kv_class(TransferBackend.MORI, KVClassType.BOOTSTRAP_SERVER),
    )


def bootstrap_server(cfg):
    server_cls = _classes()[2]
    return server_cls(host="127.0.0.1", port=cfg.bootstrap_port)


def decode_ready(cfg, mgr):
    addr = f"127.0.0.1:{cfg.bootstrap_port}"
    H._wait_http(f"http://{addr}/health", cfg.step_timeout)
    deadline = time.monotonic() + cfg.step_timeout
    while not mgr.try_ensure_parallel_info(addr):
        if time.monotonic() > deadline:
            raise TimeoutError("prefill parallel info never became available")
        time.sleep(0.1)
    return addr


def decode_start(r, results, role_name, rank, ready_info=None):
    """The decode side up to its manager knowing prefill: buffers filled
    with the sentinel, the manager started, "ready" reported (with
    ready_info(mgr) when given), prefill's parallel info fetched. Returns
    the manager and the bootstrap address."""
    r.fill_sentinel()
    mgr = r.start("decode")
    report(results, role_name, rank, "ready", ready_info(mgr) if ready_info else None)
    return mgr, decode_ready(r.cfg, mgr)


def bootstrapped(receiver_cls, mgr, addr, room, timeout, what="bootstrap"):
    """A receiver for room, initialised (prefill DP rank 0) and through
    its bootstrap."""
    rc = receiver_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=room)
    rc.init(0)
    wait_poll(rc, (_kv().WaitingForInput,), timeout, what)
    return rc


def reason_of(mgr, room):
    return mgr.failure_records.get(room)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def expect_msg(control, want: str, timeout: float):
    msg = control.recv(timeout)
    if msg != want:
        raise AssertionError(f"expected message {want!r} from the parent, got {msg!r}")


# --------------------------------------------------------------------------
# Shared request steps


def prefill_send(role: Role, sender, pages, aux_row, state_idx=None, *, chunks=1, num_kv_tokens=None):
    """What the prefill scheduler does once the request is bootstrapped:
    init with the pages it will send (beyond decode's prefix) and send them
    in chunks, state indices with the last."""
    sender.init(len(pages), aux_row)
    bounds = [round(i * len(pages) / chunks) for i in range(chunks + 1)]
    for c in range(chunks):
        last = c == chunks - 1
        part = pages[bounds[c]: bounds[c + 1]]
        kw = {}
        if num_kv_tokens is not None:
            kw["num_kv_tokens"] = num_kv_tokens
        sender.send(part, state_indices=state_idx if last else None, **kw)


def verify_pages(cfg, role: Role, chk: Checker, key: int, src_pages, dst_pages, *, entries=None, index_base=0):
    """KV entries of the decode hold the prefill's src pages at dst pages."""
    ps = cfg.page_size
    src_r, dst_r = page_rows(src_pages, ps), page_rows(dst_pages, ps)
    for i, t in enumerate(entries if entries is not None else role.kv_entries):
        want = expected(cfg, t, key, index_base + i)[src_r]
        chk.rows(t, dst_r, want, f"kv entry {i}")


def state_specs(cfg, role: str):
    """The non-mamba state components of state_paths: one of each type
    conn.py sends with _send_swa_dsa_state, and a DSA component with an
    elided (zero-length) index-K entry."""
    import torch
    from sglang.srt.disaggregation.base.conn import StateType

    def t(rows, width):
        return torch.zeros(rows, width, dtype=torch.uint8)

    return [
        (StateType.DSA, [t(64, 256), t(0, 256), t(64, 256)], {}),
        (StateType.SWA, [t(48, 512)], {}),
        (StateType.SWA_RING, [t(32, 512)], {}),
        (StateType.DSV4_REQUEST_STATE, [t(16, 1024)], {}),
        (StateType.QSA_PENDING, [t(8, 2048)], {}),
        (StateType.QSA_COMPRESSED, [t(8, 512)], {}),
        (StateType.MINIMAX_INDEX_K, [t(64, 128)], {}),
        (StateType.MINIMAX_DENSE_KV, [t(16, 256)], {}),
    ]


def state_indices(cfg, specs, req: int):
    """(src, dst) index arrays per component for request req."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, 55, req])
    src, dst = [], []
    for c, (_, tensors, _) in enumerate(specs):
        rows = max(t.shape[0] for t in tensors)
        n = 1 if rows <= 8 else 3 + c % 3
        src.append(np.sort(rng.choice(rows, n, replace=False)).astype(np.int32))
        dst.append(np.sort(rng.choice(rows, n, replace=False)).astype(np.int32))
    return src, dst


def verify_states(cfg, role: Role, chk: Checker, key: int, src_idx, dst_idx):
    for c, (st, tensors, _) in enumerate(role.states):
        for i, t in enumerate(tensors):
            if not t.numel():
                continue
            want = expected(cfg, t, key, 2000 + 100 * c + i)[src_idx[c]]
            chk.rows(t, dst_idx[c], want, f"state {st.value} tensor {i}")


def all_tensors(role: Role):
    return role.kv_entries + [t for _, ts, _ in role.states for t in ts]


def report(results, role, rank, kind, info=None):
    results.put((role, rank, kind, info or {}))
