//go:build linux && cgo

package verbs

/*
#include <stdlib.h>
#include "ibv.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"syscall"
	"time"
)

type ibvPD struct {
	c  *ibvContext
	pd *C.struct_ibv_pd
}

func (p *ibvPD) RegMR(addr uintptr, length uint64, access Access) (MR, error) {
	mr, err := C.mg_reg_mr(p.c.lib.t, p.pd, C.uint64_t(addr), C.uint64_t(length), C.int(access))
	if mr == nil {
		return nil, nullErr(fmt.Sprintf("ibv_reg_mr %s %#x len %d", p.c.name, addr, length), err)
	}
	return &ibvMR{c: p.c, mr: mr}, nil
}

func (p *ibvPD) RegDmabufMR(offset, length, iova uint64, fd int, access Access) (MR, error) {
	mr, err := C.mg_reg_dmabuf_mr(p.c.lib.t, p.pd, C.uint64_t(offset), C.uint64_t(length), C.uint64_t(iova), C.int(fd), C.int(access))
	if mr == nil {
		return nil, nullErr(fmt.Sprintf("ibv_reg_dmabuf_mr %s fd %d offset %d len %d", p.c.name, fd, offset, length), err)
	}
	return &ibvMR{c: p.c, mr: mr}, nil
}

func (p *ibvPD) CreateQP(a QPInitAttr) (QP, error) {
	scq, rcq := a.SendCQ.(*ibvCQ), a.RecvCQ.(*ibvCQ)
	qp, err := C.mg_create_qp(p.c.lib.t, p.pd, scq.cq, rcq.cq, C.uint32_t(a.MaxSendWR), C.uint32_t(a.MaxRecvWR),
		C.uint32_t(a.MaxSendSGE), C.uint32_t(a.MaxRecvSGE), C.uint32_t(a.MaxInlineData))
	if qp == nil {
		return nil, nullErr(fmt.Sprintf("ibv_create_qp %s (send %d recv %d)", p.c.name, a.MaxSendWR, a.MaxRecvWR), err)
	}
	return &ibvQP{c: p.c, qp: qp, num: uint32(C.mg_qp_num(qp))}, nil
}

func (p *ibvPD) Close() error {
	return rcErr("ibv_dealloc_pd "+p.c.name, C.mg_dealloc_pd(p.c.lib.t, p.pd))
}

type ibvMR struct {
	c  *ibvContext
	mr *C.struct_ibv_mr
}

func (m *ibvMR) LKey() uint32 { return uint32(C.mg_mr_lkey(m.mr)) }

func (m *ibvMR) RKey() uint32 { return uint32(C.mg_mr_rkey(m.mr)) }

func (m *ibvMR) Close() error {
	return rcErr("ibv_dereg_mr "+m.c.name, C.mg_dereg_mr(m.c.lib.t, m.mr))
}

type ibvChannel struct {
	c   *ibvContext
	ch  *C.struct_ibv_comp_channel
	mu  sync.Mutex
	cqs map[*C.struct_ibv_cq]*ibvCQ
}

func (h *ibvChannel) Wait(timeout time.Duration) (CQ, error) {
	var cq *C.struct_ibv_cq
	rc := C.mg_wait_cq_event(h.c.lib.t, h.ch, timeoutMS(timeout), &cq)
	if rc < 0 {
		return nil, rcErr("ibv_get_cq_event "+h.c.name, rc)
	}
	if rc == 0 {
		return nil, nil
	}
	h.mu.Lock()
	q := h.cqs[cq]
	h.mu.Unlock()
	if q == nil {
		return nil, nil // an event for a CQ destroyed meanwhile
	}
	return q, nil
}

func (h *ibvChannel) Close() error {
	return rcErr("ibv_destroy_comp_channel "+h.c.name, C.mg_destroy_comp_channel(h.c.lib.t, h.ch))
}

type ibvCQ struct {
	c  *ibvContext
	cq *C.struct_ibv_cq
	ch *ibvChannel
	wc [32]C.mg_wc
}

func (q *ibvCQ) Poll(wc []WorkCompletion) (int, error) {
	n := min(len(wc), len(q.wc))
	got := int(C.mg_poll_cq(q.cq, C.int(n), &q.wc[0]))
	if got < 0 {
		return 0, fmt.Errorf("ibv_poll_cq %s: error %d", q.c.name, got)
	}
	for i := 0; i < got; i++ {
		w := &q.wc[i]
		wc[i] = WorkCompletion{
			ID: uint64(w.wr_id), Status: WCStatus(w.status), Opcode: WCOpcode(w.opcode),
			VendorErr: uint32(w.vendor_err), ByteLen: uint32(w.byte_len), Imm: uint32(w.imm),
			Flags: uint32(w.wc_flags), QPNum: uint32(w.qp_num),
		}
	}
	return got, nil
}

func (q *ibvCQ) ReqNotify(solicitedOnly bool) error {
	s := C.int(0)
	if solicitedOnly {
		s = 1
	}
	return rcErr("ibv_req_notify_cq "+q.c.name, C.mg_req_notify_cq(q.cq, s))
}

func (q *ibvCQ) Close() error {
	q.c.cqMu.Lock()
	delete(q.c.cqs, q.cq)
	q.c.cqMu.Unlock()
	if q.ch != nil {
		q.ch.mu.Lock()
		delete(q.ch.cqs, q.cq)
		q.ch.mu.Unlock()
	}
	return rcErr("ibv_destroy_cq "+q.c.name, C.mg_destroy_cq(q.c.lib.t, q.cq))
}

type ibvQP struct {
	c   *ibvContext
	qp  *C.struct_ibv_qp
	num uint32
	mu  sync.Mutex // guards the scratch arrays
	swr []C.mg_send_wr
	rwr []C.mg_recv_wr
	sge []C.struct_ibv_sge
}

func (q *ibvQP) Num() uint32 { return q.num }

func (q *ibvQP) Modify(a *QPAttr, mask QPAttrMask) error {
	ca := C.mg_qp_attr{
		dest_qp_num: C.uint32_t(a.DestQPN), rq_psn: C.uint32_t(a.RQPSN), sq_psn: C.uint32_t(a.SQPSN),
		access: C.uint32_t(a.Access), flow_label: C.uint32_t(a.AH.FlowLabel),
		pkey_index: C.uint16_t(a.PKeyIndex), dlid: C.uint16_t(a.AH.DLID),
		state: C.uint8_t(a.State), port: C.uint8_t(a.Port), path_mtu: C.uint8_t(a.PathMTU),
		max_dest_rd_atomic: C.uint8_t(a.MaxDestRdAtom), max_rd_atomic: C.uint8_t(a.MaxRdAtomic),
		min_rnr_timer: C.uint8_t(a.MinRNRTimer), timeout: C.uint8_t(a.Timeout),
		retry_cnt: C.uint8_t(a.RetryCnt), rnr_retry: C.uint8_t(a.RNRRetry), sl: C.uint8_t(a.AH.SL),
		sgid_index: C.uint8_t(a.AH.SGIDIndex), hop_limit: C.uint8_t(a.AH.HopLimit),
		traffic_class: C.uint8_t(a.AH.TrafficClass),
	}
	if a.AH.IsGlobal {
		ca.is_global = 1
		for i, b := range a.AH.DGID {
			ca.dgid[i] = C.uint8_t(b)
		}
	}
	return rcErr(fmt.Sprintf("ibv_modify_qp %s qpn %d to %s", q.c.name, q.num, a.State), C.mg_modify_qp(q.c.lib.t, q.qp, &ca, C.int(mask)))
}

func (q *ibvQP) State() (QPState, error) {
	var s C.int
	if err := rcErr(fmt.Sprintf("ibv_query_qp %s qpn %d", q.c.name, q.num), C.mg_query_qp_state(q.c.lib.t, q.qp, &s)); err != nil {
		return 0, err
	}
	return QPState(s), nil
}

func (q *ibvQP) PostSend(wrs []SendWR) error {
	if len(wrs) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.swr, q.sge = q.swr[:0], q.sge[:0]
	for _, w := range wrs {
		q.swr = append(q.swr, C.mg_send_wr{
			wr_id: C.uint64_t(w.ID), remote_addr: C.uint64_t(w.RemoteAddr), rkey: C.uint32_t(w.RKey),
			imm: C.uint32_t(w.Imm), flags: C.uint32_t(w.Flags), sge_off: C.uint32_t(len(q.sge)),
			opcode: C.uint8_t(w.Opcode), num_sge: C.uint8_t(len(w.SGL)),
		})
		for _, s := range w.SGL {
			q.sge = append(q.sge, C.struct_ibv_sge{addr: C.uint64_t(s.Addr), length: C.uint32_t(s.Length), lkey: C.uint32_t(s.LKey)})
		}
	}
	var sge *C.struct_ibv_sge
	if len(q.sge) > 0 {
		sge = &q.sge[0]
	}
	var bad C.int
	if rc := C.mg_post_send(q.qp, &q.swr[0], C.int(len(q.swr)), sge, &bad); rc != 0 {
		return &PostError{Index: int(bad), Errno: syscall.Errno(rc)}
	}
	return nil
}

func (q *ibvQP) PostRecv(wrs []RecvWR) error {
	if len(wrs) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rwr, q.sge = q.rwr[:0], q.sge[:0]
	for _, w := range wrs {
		q.rwr = append(q.rwr, C.mg_recv_wr{wr_id: C.uint64_t(w.ID), sge_off: C.uint32_t(len(q.sge)), num_sge: C.uint32_t(len(w.SGL))})
		for _, s := range w.SGL {
			q.sge = append(q.sge, C.struct_ibv_sge{addr: C.uint64_t(s.Addr), length: C.uint32_t(s.Length), lkey: C.uint32_t(s.LKey)})
		}
	}
	var sge *C.struct_ibv_sge
	if len(q.sge) > 0 {
		sge = &q.sge[0]
	}
	var bad C.int
	if rc := C.mg_post_recv(q.qp, &q.rwr[0], C.int(len(q.rwr)), sge, &bad); rc != 0 {
		return &PostError{Index: int(bad), Errno: syscall.Errno(rc)}
	}
	return nil
}

func (q *ibvQP) Close() error {
	return rcErr(fmt.Sprintf("ibv_destroy_qp %s qpn %d", q.c.name, q.num), C.mg_destroy_qp(q.c.lib.t, q.qp))
}
