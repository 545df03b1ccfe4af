"""Role-process scenarios for the paths of SGLang's mori/conn.py that the
plain request flow of pd_harness.py never reaches (test_conn_paths.py).

Each scenario runs in a prefill or decode process started by
``pd_harness.PDRun`` (``PDConfig.scenario = "pd_paths:<name>"``) and drives
SGLang's own ``MoriKVManager``, ``MoriKVSender``, ``MoriKVReceiver`` and
bootstrap server as the scheduler does, with the parallel layout of the
scenario published into SGLang's runtime context (TP, attention DP, PP,
decode context parallel). The parent steps the two sides with
``PDRun.tell`` / ``control.recv`` where the order of events matters (an
abort while a chunk is held, a decode stopped mid-transfer).

Bytes: every buffer of the prefill side is filled from a seeded pattern
keyed by what it holds (layer, rank or DP rank, state component); the
decode side starts from a sentinel and checks every row it should have
received and that no other row changed. The building blocks (Role,
Checker, the request steps) are in pd_roles.py.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict

import pd_harness as H
from pd_roles import (
    Checker,
    Role,
    StorePPGroup,
    _classes,
    _kv,
    all_tensors,
    bootstrap_server,
    bootstrapped,
    check_aux,
    decode_ready,
    decode_start,
    expect_msg,
    expected,
    page_rows,
    prefill_send,
    reason_of,
    report,
    rows_of,
    state_indices,
    state_specs,
    verify_pages,
    verify_states,
    wait_poll,
    wait_until,
)

# --------------------------------------------------------------------------
# Scenario: abort, deferred ACK, poisoned room


class Gate:
    """A wait_event whose synchronize() holds the transfer worker (as a CUDA
    event not yet reached would) until the test opens it."""

    def __init__(self):
        self.open = threading.Event()

    def synchronize(self):
        if not self.open.wait(120):
            raise TimeoutError("gate never opened")


def abort_paths(role_name, rank, cfg, results, control):
    """Rooms: 0 completes; 1 is aborted while its chunk is held in the
    transfer worker (the ACK must wait for the worker); 2 fails in the
    data plane (decode deregistered a KV region), so its room is poisoned
    and its ABORT is never acknowledged; 3 is aborted with nothing in
    flight (acknowledged at once)."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    rooms = [cfg.room + i for i in range(4)]
    maps = [H.page_maps(cfg, i) for i in range(4)]
    T = cfg.step_timeout
    if role_name == "prefill":
        server = bootstrap_server(cfg)  # noqa: F841
        r = Role(cfg, "prefill", rank)
        r.fill_prefill(0)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"deferred": mgr.enable_deferred_decode_kv_release})
        addr = f"127.0.0.1:{cfg.bootstrap_port}"
        senders = [sender_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=room) for room in rooms]
        for s in senders:
            wait_poll(s, (KVPoll.WaitingForInput,), T, "prefill bootstrap")
        # room 0: a normal request
        prefill_send(r, senders[0], maps[0][0], H.aux_rows(0)[0])
        st0, _ = wait_poll(senders[0], (KVPoll.Success,), T, "room 0")
        report(results, role_name, rank, "room0", {"status": int(st0)})
        # room 1: the chunk is held in the worker, decode aborts
        gate = Gate()
        senders[1]._early_send_wait_event = gate
        prefill_send(r, senders[1], maps[1][0], H.aux_rows(1)[0])
        wait_until(lambda: mgr._staging_outstanding.get(rooms[1], 0) == 1, T, "room 1 never started")
        report(results, role_name, rank, "room1_held")
        wait_until(lambda: rooms[1] in mgr._deferred_ack_targets, T, "room 1 ACK never deferred")
        report(results, role_name, rank, "room1_ack_deferred", {"status": int(senders[1].poll())})
        expect_msg(control, "release", T)
        gate.open.set()
        wait_until(lambda: rooms[1] not in mgr._staging_outstanding, T, "room 1 never quiesced")
        report(results, role_name, rank, "room1_released", {"ack_targets_left": rooms[1] in mgr._deferred_ack_targets})
        # room 2: the write fails in the data plane
        expect_msg(control, "send2", T)
        prefill_send(r, senders[2], maps[2][0], H.aux_rows(2)[0])
        st2, _ = wait_poll(senders[2], (KVPoll.Success,), T, "room 2")
        wait_until(lambda: rooms[2] in mgr._deferred_ack_poisoned_rooms, T, "room 2 never poisoned")
        report(results, role_name, rank, "room2", {"status": int(st2), "reason": reason_of(mgr, rooms[2]), "poisoned": True})
        control.recv(3 * T)
        return

    r = Role(cfg, "decode", rank)
    mgr, addr = decode_start(r, results, role_name, rank)
    recvs = [receiver_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=room) for room in rooms]
    for rc in recvs:
        rc.init(0)
        wait_poll(rc, (KVPoll.WaitingForInput,), T, "decode bootstrap")
    for i, rc in enumerate(recvs):
        rc.send_metadata(maps[i][1], H.aux_rows(i)[1], None)
    st0, _ = wait_poll(recvs[0], (KVPoll.Success,), T, "room 0")
    chk = Checker()
    if st0 == KVPoll.Success:
        verify_pages(cfg, r, chk, 0, maps[0][0], maps[0][1])
        check_aux(cfg, r, 0, H.aux_rows(0)[0], H.aux_rows(0)[1], chk)
    report(results, role_name, rank, "room0", {"status": int(st0), "bytes": chk.bytes})
    expect_msg(control, "abort1", T)
    recvs[1].abort()
    report(results, role_name, rank, "room1_aborted", {"generation": recvs[1]._abort_generation})
    expect_msg(control, "check1", T)
    safe_before = mgr.is_abort_release_safe(rooms[1], 1)
    report(results, role_name, rank, "room1_checked", {"safe": safe_before})
    expect_msg(control, "wait_ack1", T)
    wait_until(lambda: mgr.is_abort_release_safe(rooms[1], 1), T, "room 1 ACK never came")
    report(results, role_name, rank, "room1_acked")
    # room 2: this decode drops one of its KV registrations (as teardown()
    # would), so the prefill's writes to it fail in mori-go's inbound check
    mgr.engine.deregister_memory(mgr.kv_mem_descs[-1])
    report(results, role_name, rank, "room2_broken")
    st2, _ = wait_poll(recvs[2], (KVPoll.Success,), T, "room 2")
    reason2 = reason_of(mgr, rooms[2])
    recvs[2].abort()  # already Failed: ABORT with a generation, as SGLang's release path does
    recvs[3].abort()  # nothing in flight: acknowledged at once
    wait_until(lambda: mgr.is_abort_release_safe(rooms[3], 1), T, "room 3 ACK never came")
    # ACKs come in order over one socket: room 2's would have arrived first
    safe2 = mgr.is_abort_release_safe(rooms[2], 1)
    # nothing of rooms 1 and 3 was written; room 2 may be partly written
    for t in r.kv_entries:
        chk.touched.setdefault(id(t), set()).update(int(x) for x in page_rows(maps[2][1], cfg.page_size))
    chk.untouched(r.kv_entries, "kv entry")
    report(results, role_name, rank, "done", {"room2_status": int(st2), "room2_reason": reason2,
                                               "room2_acked": safe2, "room3_acked": True})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: teardown(), deregister_memory, a new manager, default poll


def _threads_of(mgr):
    return list(getattr(mgr, "_worker_threads", []))


def teardown_paths(role_name, rank, cfg, results, control):
    """Room 0 with SGLang's default poll interval; then decode tears its
    manager down (threads stop, every registration is dropped: a write to
    an old descriptor fails and changes nothing), builds a new manager on
    the same pools (as a role switch does) and room 1 arrives through it;
    prefill tears down last."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    rooms = [cfg.room, cfg.room + 1]
    maps = [H.page_maps(cfg, i) for i in range(2)]
    T = cfg.step_timeout
    # --enable-pd-role-switch: the workers poll so that teardown() can stop them
    role_switch = {"enable_pd_role_switch": True}
    if role_name == "prefill":
        server = bootstrap_server(cfg)  # noqa: F841
        r = Role(cfg, "prefill", rank, server_kw=role_switch)
        r.fill_prefill(0)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"wait_poll_ms": mgr._wait_poll_ms})
        addr = f"127.0.0.1:{cfg.bootstrap_port}"
        s0 = sender_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=rooms[0])
        wait_poll(s0, (KVPoll.WaitingForInput,), T, "room 0 bootstrap")
        prefill_send(r, s0, maps[0][0], H.aux_rows(0)[0], chunks=2)
        st0, _ = wait_poll(s0, (KVPoll.Success,), T, "room 0")
        report(results, role_name, rank, "room0", {"status": int(st0)})
        expect_msg(control, "write_stale", T)
        # the torn-down decode's descriptor, as this prefill registered it
        (peer,) = mgr.decode_kv_args_table.values()
        stale_page = int(cfg.extra["stale_page"])
        item = r.kv_args.kv_item_lens[0]
        st = mgr.engine.batch_write([mgr.kv_mem_descs[0]], [[stale_page * item]],
                                    [peer.dst_kv_mem_descs[0]], [[stale_page * item]],
                                    [[item]], [mgr.engine.allocate_transfer_uid()])[0]
        st.Wait()
        report(results, role_name, rank, "stale_written", {"failed": bool(st.Failed()), "message": st.Message()})
        s1 = sender_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=rooms[1])
        wait_poll(s1, (KVPoll.WaitingForInput,), T, "room 1 bootstrap")
        prefill_send(r, s1, maps[1][0], H.aux_rows(1)[0])
        st1, _ = wait_poll(s1, (KVPoll.Success,), T, "room 1")
        eng, threads = mgr.engine, _threads_of(mgr)
        mgr.teardown()
        report(results, role_name, rank, "done", {
            "status": int(st1), "threads_alive": [t.name for t in threads if t.is_alive()],
            "threads": len(threads), "regions": eng.stats()["regions"], "engine": mgr.engine})
        control.recv(3 * T)
        return

    r = Role(cfg, "decode", rank, server_kw=role_switch)
    mgr, addr = decode_start(r, results, role_name, rank)
    rc = bootstrapped(receiver_cls, mgr, addr, rooms[0], T, "decode bootstrap")
    rc.send_metadata(maps[0][1], H.aux_rows(0)[1], None)
    st0, _ = wait_poll(rc, (KVPoll.Success,), T, "room 0")
    chk = Checker()
    verify_pages(cfg, r, chk, 0, maps[0][0], maps[0][1])
    check_aux(cfg, r, 0, H.aux_rows(0)[0], H.aux_rows(0)[1], chk)
    rc.clear()
    eng, threads = mgr.engine, _threads_of(mgr)
    regions_before = eng.stats()["regions"]
    mgr.teardown()
    report(results, role_name, rank, "room0", {
        "status": int(st0), "bytes": chk.bytes, "regions_before": regions_before,
        "regions_after": eng.stats()["regions"], "threads": len(threads),
        "threads_alive": [t.name for t in threads if t.is_alive()], "engine": mgr.engine})
    expect_msg(control, "stale_done", T)
    # the role comes back: a new manager registers the same pools again
    mgr2 = r.start("decode")
    addr = decode_ready(cfg, mgr2)
    rc1 = receiver_cls(mgr=mgr2, bootstrap_addr=addr, bootstrap_room=rooms[1])
    rc1.init(0)
    wait_poll(rc1, (KVPoll.WaitingForInput,), T, "decode bootstrap, new manager")
    rc1.send_metadata(maps[1][1], H.aux_rows(1)[1], None)
    st1, _ = wait_poll(rc1, (KVPoll.Success,), T, "room 1")
    verify_pages(cfg, r, chk, 0, maps[1][0], maps[1][1])
    check_aux(cfg, r, 0, H.aux_rows(1)[0], H.aux_rows(1)[1], chk)
    chk.untouched(r.kv_entries, "kv entry")  # the stale page included
    report(results, role_name, rank, "done", {"status": int(st1), "bytes": chk.bytes})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: draft KV, the state types, decode_prefix_len


def state_paths(role_name, rank, cfg, results, control):
    """Rooms with a decode prefix of 0, 2 pages and all pages (a full prefix
    hit: no KV page moves, aux and state still do). With
    extra["states"], every state component type of state_specs; with
    extra["draft"] = {role: layers}, draft-model KV entries after the
    target's (on one side only: conn.py must pair the target's K and V
    past the decode's draft entries)."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    prefixes = cfg.extra.get("prefix_pages", [0])
    rooms = [cfg.room + i for i in range(len(prefixes))]
    maps = [H.page_maps(cfg, i) for i in range(len(prefixes))]
    specs = state_specs(cfg, role_name) if cfg.extra.get("states") else []
    idx = [state_indices(cfg, specs, i) for i in range(len(rooms))] if specs else None
    draft = cfg.extra.get("draft", {}).get(role_name, 0)
    ps, T = cfg.page_size, cfg.step_timeout
    r = Role(cfg, role_name, rank, draft_layers=draft, states=specs)
    if role_name == "prefill":
        server = bootstrap_server(cfg)  # noqa: F841
        r.fill_prefill(0)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"num_draft_entries": r.kv_args.num_draft_entries})
        addr = f"127.0.0.1:{cfg.bootstrap_port}"
        out = []
        for i, room in enumerate(rooms):
            s = sender_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=room)
            wait_poll(s, (KVPoll.WaitingForInput,), T, f"room {i} bootstrap")
            prefix = s.pop_decode_prefix_len()  # as finalize_bootstrap does
            pages = maps[i][0][prefix // ps:]
            prefill_send(r, s, pages, H.aux_rows(i)[0], idx[i][0] if idx else None)
            st, _ = wait_poll(s, (KVPoll.Success,), T, f"room {i}")
            out.append({"status": int(st), "prefix": prefix, "pages_sent": len(pages),
                        "reason": reason_of(mgr, room)})
        report(results, role_name, rank, "done", {"rooms": out})
        control.recv(3 * T)
        return

    mgr, addr = decode_start(r, results, role_name, rank,
                             lambda mgr: {"num_draft_entries": r.kv_args.num_draft_entries})
    chk = Checker()
    out = []
    n_target = len(r.kv_entries) - r.kv_args.num_draft_entries
    src_draft = cfg.extra.get("draft", {}).get("prefill", 0)
    for i, room in enumerate(rooms):
        rc = bootstrapped(receiver_cls, mgr, addr, room, T, f"room {i} bootstrap")
        skip = prefixes[i]
        rc.send_metadata(maps[i][1][skip:], H.aux_rows(i)[1], idx[i][1] if idx else None,
                         decode_prefix_len=skip * ps)
        st, _ = wait_poll(rc, (KVPoll.Success,), T, f"room {i}")
        if st == KVPoll.Success:
            src_p, dst_p = maps[i][0][skip:], maps[i][1][skip:]
            entries = r.kv_entries if src_draft else r.kv_entries[:n_target]
            verify_pages(cfg, r, chk, 0, src_p, dst_p, entries=entries)
            check_aux(cfg, r, 0, H.aux_rows(i)[0], H.aux_rows(i)[1], chk)
            if idx:
                verify_states(cfg, r, chk, 0, idx[i][0], idx[i][1])
        out.append({"status": int(st), "reason": reason_of(mgr, room)})
        rc.clear()
    chk.untouched(all_tensors(r), "kv entry or state tensor")
    report(results, role_name, rank, "done", {"rooms": out, "bytes": chk.bytes})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: SLA timeout (decode stopped mid-transfer)


def sla_paths(role_name, rank, cfg, results, control):
    """The parent SIGSTOPs decode once it sent its metadata; prefill's
    writes cannot complete, wait_all keeps answering IN_PROGRESS, and
    conn.py gives the request up after SGLANG_MORI_TRANSFER_TIMEOUT_MS
    with its "exceeded SLA" reason; decode, continued, sees Failed with the
    same reason."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    src, dst = H.page_maps(cfg, 0)
    T = cfg.step_timeout
    r = Role(cfg, role_name, rank)
    if role_name == "prefill":
        server = bootstrap_server(cfg)  # noqa: F841
        r.fill_prefill(0)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"sla_ms": mgr._transfer_timeout_ms})
        s = sender_cls(mgr=mgr, bootstrap_addr=f"127.0.0.1:{cfg.bootstrap_port}", bootstrap_room=cfg.room)
        wait_poll(s, (KVPoll.WaitingForInput,), T, "bootstrap")
        # decode is registered (its registration came before its metadata)
        report(results, role_name, rank, "bootstrapped")
        expect_msg(control, "send", T)
        t0 = time.monotonic()
        prefill_send(r, s, src, H.aux_rows(0)[0])
        st, _ = wait_poll(s, (KVPoll.Success,), T, "transfer")
        report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, cfg.room),
                                                   "seconds": time.monotonic() - t0})
        control.recv(3 * T)
        return
    mgr, addr = decode_start(r, results, role_name, rank)
    rc = bootstrapped(receiver_cls, mgr, addr, cfg.room, T)
    rc.send_metadata(dst, H.aux_rows(0)[1], None)
    report(results, role_name, rank, "metadata_sent")
    st, _ = wait_poll(rc, (KVPoll.Success,), T, "transfer")
    report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, cfg.room)})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: prefill attention DP > 1


def dp_paths(role_name, rank, cfg, results, control):
    """Prefill: tp 2, dp 2, DP attention (one process per DP rank, each its
    own MoriKVManager registered under its DP rank); DP rank d serves room
    room+d and registers it with the bootstrap server
    (/register_dp_rank); decode looks the rooms' DP ranks up
    (query_prefill_dp_ranks) and each request's bytes come from its DP
    rank's cache."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    rooms = [cfg.room, cfg.room + 1]
    T = cfg.step_timeout
    if role_name == "prefill":
        if rank == 0:
            server = bootstrap_server(cfg)  # noqa: F841
        r = Role(cfg, "prefill", rank, server_kw=dict(tp_size=2, dp_size=2, enable_dp_attention=True))
        r.fill_prefill(10 + rank)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"attn_dp_rank": mgr.attn_dp_rank, "attn_tp_size": mgr.attn_tp_size})
        s = sender_cls(mgr=mgr, bootstrap_addr=f"127.0.0.1:{cfg.bootstrap_port}", bootstrap_room=rooms[rank])
        wait_poll(s, (KVPoll.WaitingForInput,), T, "bootstrap")
        prefill_send(r, s, H.page_maps(cfg, rank)[0], H.aux_rows(rank)[0])
        st, _ = wait_poll(s, (KVPoll.Success,), T, "transfer")
        report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, rooms[rank])})
        control.recv(3 * T)
        return
    r = Role(cfg, "decode", rank)
    mgr, addr = decode_start(r, results, role_name, rank)
    dp_of: Dict[str, int] = {}
    wait_until(lambda: len(dp_of.update(receiver_cls.query_prefill_dp_ranks(addr, rooms)) or dp_of) == 2,
               T, "the rooms' prefill DP ranks never registered")
    chk, out = Checker(), {}
    recvs = []
    for i, room in enumerate(rooms):
        rc = receiver_cls(mgr=mgr, bootstrap_addr=addr, bootstrap_room=room)
        rc.init(dp_of[str(room)])
        recvs.append(rc)
    for i, rc in enumerate(recvs):
        wait_poll(rc, (KVPoll.WaitingForInput,), T, "bootstrap")
        rc.send_metadata(H.page_maps(cfg, i)[1], H.aux_rows(i)[1], None)
    for i, rc in enumerate(recvs):
        st, _ = wait_poll(rc, (KVPoll.Success,), T, "transfer")
        dp = dp_of[str(rooms[i])]
        if st == KVPoll.Success:
            src, dst = H.page_maps(cfg, i)
            verify_pages(cfg, r, chk, 10 + dp, src, dst)
            check_aux(cfg, r, 10 + dp, H.aux_rows(i)[0], H.aux_rows(i)[1], chk)
        out[str(rooms[i])] = {"status": int(st), "dp": dp}
    chk.untouched(r.kv_entries, "kv entry")
    report(results, role_name, rank, "done", {"rooms": out, "bytes": chk.bytes})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: prefill pipeline parallel 2


def pp_paths(role_name, rank, cfg, results, control):
    """Prefill: pp 2 (one process per stage, each holding half the layers,
    its pool starting at its first global layer; request status through
    SGLang's PPConsensusStore); decode pp 1 with every layer. Each stage
    writes its layers into the decode's entries of the same global layer,
    the last stage the aux row; decode completes when both stages
    reported."""
    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    src, dst = H.page_maps(cfg, 0)
    T = cfg.step_timeout
    L = cfg.layers
    if role_name == "prefill":
        if rank == 0:
            server = bootstrap_server(cfg)  # noqa: F841
        group = StorePPGroup(rank, 2, int(cfg.extra["store_port"]))
        per = L // 2
        r = Role(cfg, "prefill", rank, server_kw=dict(pp_size=2), pp_group=group,
                 layers=per, start_layer=rank * per)
        r.fill_prefill(0, layer_base=rank * per)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"pp_rank": mgr.pp_rank, "store": type(mgr.request_status).__name__})
        s = sender_cls(mgr=mgr, bootstrap_addr=f"127.0.0.1:{cfg.bootstrap_port}", bootstrap_room=cfg.room)
        wait_poll(s, (KVPoll.WaitingForInput,), T, "bootstrap")
        prefill_send(r, s, src, H.aux_rows(0)[0], chunks=2)
        st, _ = wait_poll(s, (KVPoll.Success,), T, "transfer")
        report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, cfg.room)})
        control.recv(3 * T)
        return
    r = Role(cfg, "decode", rank)
    mgr, addr = decode_start(r, results, role_name, rank)
    rc = bootstrapped(receiver_cls, mgr, addr, cfg.room, T)
    rc.send_metadata(dst, H.aux_rows(0)[1], None)
    st, _ = wait_poll(rc, (KVPoll.Success,), T, "transfer")
    chk = Checker()
    if st == KVPoll.Success:
        verify_pages(cfg, r, chk, 0, src, dst)
        check_aux(cfg, r, 0, H.aux_rows(0)[0], H.aux_rows(0)[1], chk)
        chk.untouched(r.kv_entries, "kv entry")
    report(results, role_name, rank, "done", {"status": int(st), "bytes": chk.bytes,
                                               "responses": mgr.required_prefill_response_num_table.get(cfg.room),
                                               "reason": reason_of(mgr, cfg.room)})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: decode context parallel (send_kvcache_dcp)


def dcp_dst_pages(cfg, rank):
    import numpy as np

    rng = np.random.default_rng([cfg.seed, 99, rank])
    avail = np.arange(1, cfg.pool_pages, dtype=np.int64)
    return np.sort(rng.choice(avail, cfg.num_pages // 2, replace=False)).astype(np.int32)


def dcp_paths(role_name, rank, cfg, results, control):
    """Decode: tp 2 with decode context parallel 2 (MLA); prefill tp 1, dcp
    1. conn.py relays the KV out token by token: decode DCP rank r gets
    the prompt's tokens r, r+2, r+4, ... packed into its own pages, in two
    chunks (src_page_offset of the second). With extra["draft"], one
    draft-model layer on both sides: the draft is not split by context,
    every decode rank gets all of its tokens, in pages of page_size x dcp
    tokens (conn.py's draft plan), so the decode's draft pool is twice as
    large."""
    import numpy as np

    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    src = H.page_maps(cfg, 0)[0]
    ps, T = cfg.page_size, cfg.step_timeout
    draft = int(cfg.extra.get("draft", 0))
    if role_name == "prefill":
        server = bootstrap_server(cfg)  # noqa: F841
        r = Role(cfg, "prefill", rank, draft_layers=draft)
        r.fill_prefill(0)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready")
        s = sender_cls(mgr=mgr, bootstrap_addr=f"127.0.0.1:{cfg.bootstrap_port}", bootstrap_room=cfg.room)
        wait_poll(s, (KVPoll.WaitingForInput,), T, "bootstrap")
        s.init(len(src), H.aux_rows(0)[0])
        half = len(src) // 2
        for part in (src[:half], src[half:]):
            s.send(part, num_kv_tokens=len(part) * ps)
        st, _ = wait_poll(s, (KVPoll.Success,), T, "transfer")
        relayout = [p.requires_dcp_relayout for p in mgr.decode_kv_args_table.values()]
        report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, cfg.room),
                                                   "relayout": relayout})
        control.recv(3 * T)
        return
    r = Role(cfg, "decode", rank, server_kw=dict(tp_size=2, dcp_size=2),
             draft_layers=draft, draft_tokens=2 * cfg.pool_tokens)
    mgr, addr = decode_start(r, results, role_name, rank, lambda mgr: {"dcp": (mgr.dcp_size, mgr.dcp_rank)})
    rc = bootstrapped(receiver_cls, mgr, addr, cfg.room, T)
    dst = dcp_dst_pages(cfg, rank)
    rc.send_metadata(dst, H.aux_rows(0)[1], None)
    st, _ = wait_poll(rc, (KVPoll.Success,), T, "transfer")
    chk = Checker()
    if st == KVPoll.Success:
        n_local = cfg.num_pages * ps // 2
        j = np.arange(n_local)
        g = 2 * j + mgr.dcp_rank
        dst_rows = dst[j // ps].astype(np.int64) * ps + j % ps
        src_rows = src[g // ps].astype(np.int64) * ps + g % ps
        n_target = len(r.kv_entries) - r.kv_args.num_draft_entries
        for i, t in enumerate(r.kv_entries[:n_target]):
            chk.rows(t, dst_rows, expected(cfg, t, 0, i)[src_rows], f"kv entry {i}")
        # draft: every token l of the prompt at row l of virtual pages of 2 ps
        vps = 2 * ps
        tok = np.arange(cfg.num_pages * ps)
        d_rows = dst[tok // vps].astype(np.int64) * vps + tok % vps
        s_rows = src[tok // ps].astype(np.int64) * ps + tok % ps
        for i, t in enumerate(r.kv_entries[n_target:], start=n_target):
            # the prefill's draft pool has the size of a target pool
            rows = r.kv_entries[0].shape[0]
            want = H.pattern(rows * rows_of(t).shape[1], cfg.seed, 0, i).reshape(rows, -1)
            chk.rows(t, d_rows, want[s_rows], f"draft kv entry {i}")
        check_aux(cfg, r, 0, H.aux_rows(0)[0], H.aux_rows(0)[1], chk)
        chk.untouched(r.kv_entries, "kv entry")
    report(results, role_name, rank, "done", {"status": int(st), "bytes": chk.bytes, "reason": reason_of(mgr, cfg.room)})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: Mamba state across different TP sizes


MAMBA_CONV_GROUPS = [4, 4, 8]  # GDN conv state: [query | key | value] channels
MAMBA_CONV_CH_BYTES = 16
MAMBA_HEADS, MAMBA_HEAD_BYTES = 4, 64
MAMBA_SLOTS_TP = 6


def _mamba_channels(kind: str, r: int, tp: int):
    """Global channel (conv) or head (temporal) ids that TP rank r holds."""
    if kind == "conv":
        out, off = [], 0
        for g in MAMBA_CONV_GROUPS:
            out += list(range(off + r * g // tp, off + (r + 1) * g // tp))
            off += g
        return out
    return list(range(r * MAMBA_HEADS // tp, (r + 1) * MAMBA_HEADS // tp))


def _mamba_global(cfg, k: int, kind: str):
    if kind == "conv":
        shape = (MAMBA_SLOTS_TP, sum(MAMBA_CONV_GROUPS), MAMBA_CONV_CH_BYTES)
    else:
        shape = (MAMBA_SLOTS_TP, MAMBA_HEADS, MAMBA_HEAD_BYTES)
    return H.pattern(int(__import__("numpy").prod(shape)), cfg.seed, 3000 + k).reshape(shape)


MAMBA_KINDS = ["conv", "conv", "temporal", "temporal"]  # two mamba layers


def mamba_state(tp: int):
    import torch
    from sglang.srt.disaggregation.base.conn import StateType

    conv_dim = sum(MAMBA_CONV_GROUPS) // tp
    head_dim = MAMBA_HEADS // tp
    tensors, dims, groups = [], [], []
    for kind in MAMBA_KINDS:
        if kind == "conv":
            tensors.append(torch.zeros(MAMBA_SLOTS_TP, conv_dim * MAMBA_CONV_CH_BYTES, dtype=torch.uint8))
            dims.append(conv_dim)
            groups.append(list(MAMBA_CONV_GROUPS))
        else:
            tensors.append(torch.zeros(MAMBA_SLOTS_TP, head_dim * MAMBA_HEAD_BYTES, dtype=torch.uint8))
            dims.append(head_dim)
            groups.append(None)
    extra = dict(dim_per_tensor=dims, conv_shard_groups=groups, slice_outer_counts=[1] * len(tensors))
    return [(StateType.MAMBA, tensors, extra)]


def mamba_paths(role_name, rank, cfg, results, control):
    """Prefill and decode with different TP sizes (MHA, hybrid with a GDN
    Mamba state: per layer a conv state whose query, key and value channel
    groups are each split across TP, and a temporal state split by head).
    Scatter (1 -> 2) and aggregation (2 -> 1): each decode rank's slot holds
    exactly its channels of the model's state, in its own layout."""
    import numpy as np

    KVPoll = _kv()
    sender_cls, receiver_cls, _ = _classes()
    src, dst = H.page_maps(cfg, 0)
    src_slot, dst_slot = 1, 4
    T = cfg.step_timeout
    tp = cfg.prefill_tp if role_name == "prefill" else cfg.decode_tp
    r = Role(cfg, role_name, rank, server_kw=dict(tp_size=tp), states=mamba_state(tp),
             mha_heads=cfg.total_kv_heads // tp)
    tensors = r.states[0][1]
    if role_name == "prefill":
        if rank == 0:
            server = bootstrap_server(cfg)  # noqa: F841
        r.fill_prefill(rank)
        for k, (t, kind) in enumerate(zip(tensors, MAMBA_KINDS)):
            g = _mamba_global(cfg, k, kind)
            rows_of(t)[:] = g[:, _mamba_channels(kind, rank, tp), :].reshape(MAMBA_SLOTS_TP, -1)
        mgr = r.start("prefill")
        report(results, role_name, rank, "ready", {"state_tp_size": mgr.state_tp_size})
        s = sender_cls(mgr=mgr, bootstrap_addr=f"127.0.0.1:{cfg.bootstrap_port}", bootstrap_room=cfg.room)
        wait_poll(s, (KVPoll.WaitingForInput,), T, "bootstrap")
        prefill_send(r, s, src, H.aux_rows(0)[0], [np.array([src_slot], dtype=np.int32)])
        st, _ = wait_poll(s, (KVPoll.Success,), T, "transfer")
        report(results, role_name, rank, "done", {"status": int(st), "reason": reason_of(mgr, cfg.room)})
        control.recv(3 * T)
        return
    mgr, addr = decode_start(r, results, role_name, rank)
    rc = bootstrapped(receiver_cls, mgr, addr, cfg.room, T)
    rc.send_metadata(dst, H.aux_rows(0)[1], [np.array([dst_slot], dtype=np.int32)])
    st, _ = wait_poll(rc, (KVPoll.Success,), T, "transfer")
    chk = Checker()
    if st == KVPoll.Success:
        for k, (t, kind) in enumerate(zip(tensors, MAMBA_KINDS)):
            g = _mamba_global(cfg, k, kind)
            want = g[src_slot, _mamba_channels(kind, rank, tp), :].reshape(1, -1)
            chk.rows(t, [dst_slot], want, f"mamba {kind} tensor {k}")
        chk.untouched(tensors, "mamba tensor")
    report(results, role_name, rank, "done", {"status": int(st), "bytes": chk.bytes, "reason": reason_of(mgr, cfg.room)})
    control.recv(3 * T)


# --------------------------------------------------------------------------
# Scenario: --disaggregation-ib-device


def ib_device_paths(role_name, rank, cfg, results, control):
    """--disaggregation-ib-device names an RDMA device: conn.py puts it in
    MORI_RDMA_DEVICES before it creates the engine, and mori-go refuses to
    start a manager on a named device that is not usable (no silent TCP)."""
    os.environ.pop("MORI_RDMA_DEVICES", None)
    device = cfg.extra["ib_device"]
    r = Role(cfg, role_name, rank, server_kw=dict(disaggregation_ib_device=device))
    info = {"kv_args_ib_device": r.kv_args.ib_device}
    try:
        mgr = r.start("decode")
        info["started"] = True
        info["stats"] = mgr.engine.stats()
    except Exception as e:  # what SGLang's scheduler would die with
        info["started"] = False
        info["error"] = f"{type(e).__name__}: {e}"
    info["MORI_RDMA_DEVICES"] = os.environ.get("MORI_RDMA_DEVICES")
    report(results, role_name, rank, "done", info)
    control.recv(3 * cfg.step_timeout)
