package sim

import (
	"github.com/mori-go/mori-go/verbs"
)

// Vendor error codes the simulator reports (mlx5's syndromes for the same
// faults).
const (
	vendorLocProt   = 0x04
	vendorRemAccess = 0x13
	vendorRetryExc  = 0x15
	vendorRNRExc    = 0x16
	vendorFlush     = 0xf9
)

func wcOpcode(o verbs.Opcode) verbs.WCOpcode {
	switch o {
	case verbs.OpRDMARead:
		return verbs.WCRDMARead
	case verbs.OpSend, verbs.OpSendWithImm:
		return verbs.WCSend
	}
	return verbs.WCRDMAWrite
}

func vendorErr(s verbs.WCStatus) uint32 {
	switch s {
	case verbs.WCSuccess:
		return 0
	case verbs.WCLocProtErr:
		return vendorLocProt
	case verbs.WCRemAccessErr:
		return vendorRemAccess
	case verbs.WCRetryExcErr:
		return vendorRetryExc
	case verbs.WCRNRRetryExcErr:
		return vendorRNRExc
	case verbs.WCWRFlushErr:
		return vendorFlush
	}
	return 0x01
}

// accepts reports whether q is the connected responder of requester r:
// ready to receive, connected back to r's QP number, with the PSN r starts
// from.
func (q *qp) accepts(r *qp, sqPSN uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return (q.state == verbs.QPRTR || q.state == verbs.QPRTS) && q.attr.DestQPN == r.num &&
		q.attr.RQPSN == sqPSN && q.f.route(q.attr.AH) == r.d
}

func (q *qp) takeRecv() (verbs.RecvWR, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.rq) == 0 {
		return verbs.RecvWR{}, false
	}
	r := q.rq[0]
	q.rq = q.rq[1:]
	return r, true
}

// execute carries out one work request. ok is false when the QP was
// destroyed meanwhile.
func (q *qp) execute(it *sendItem) (status verbs.WCStatus, byteLen uint32, ok bool) {
	f := q.f
	f.mu.Lock()
	lat := f.latency
	f.mu.Unlock()
	if !q.sleep(lat) {
		return 0, 0, false
	}
	q.mu.Lock()
	attr := q.attr
	q.mu.Unlock()
	peer, status, ok := q.reach(attr)
	if peer == nil {
		return status, 0, ok
	}
	w := &it.wr
	var recv verbs.RecvWR
	needRecv := w.Opcode == verbs.OpSend || w.Opcode == verbs.OpSendWithImm || w.Opcode == verbs.OpRDMAWriteWithImm
	if needRecv {
		if recv, status, ok = q.waitRecv(peer, attr); status != verbs.WCSuccess || !ok {
			return status, 0, ok
		}
	}
	f.dma.RLock()
	defer f.dma.RUnlock()
	local, total, okm := q.localBuffers(it)
	if !okm {
		if needRecv {
			peer.requeueRecv(recv)
		}
		return verbs.WCLocProtErr, 0, true
	}
	switch w.Opcode {
	case verbs.OpRDMAWrite, verbs.OpRDMAWriteWithImm, verbs.OpRDMARead:
		status, byteLen = q.rdma(peer, w, local, total, recv, needRecv)
		return status, byteLen, true
	}
	return q.deliver(peer, w, local, total, recv), 0, true
}

// reach finds the connected responder of the QP's route. A lost packet
// (or a responder that is gone or not connected to us) is retransmitted up
// to retry_cnt times; then peer is nil and status says why (ok is false
// when the QP was destroyed meanwhile).
func (q *qp) reach(attr verbs.QPAttr) (peer *qp, status verbs.WCStatus, ok bool) {
	f := q.f
	dst := f.route(attr.AH)
	for attempt := 0; ; attempt++ {
		peer = nil
		if dst != nil {
			dst.mu.Lock()
			peer = dst.qps[attr.DestQPN]
			dst.mu.Unlock()
		}
		if !f.lose(q.d, dst) && peer != nil && peer.accepts(q, attr.SQPSN) {
			return peer, verbs.WCSuccess, true
		}
		if attempt >= int(attr.RetryCnt) {
			return nil, verbs.WCRetryExcErr, true
		}
		if !q.sleep(f.cfg.RetryInterval) {
			return nil, 0, false
		}
	}
}

// waitRecv takes a receive of the responder, retrying while it has none
// (receiver not ready) up to rnr_retry times (7: for ever).
func (q *qp) waitRecv(peer *qp, attr verbs.QPAttr) (verbs.RecvWR, verbs.WCStatus, bool) {
	for tries := 0; ; tries++ {
		if recv, got := peer.takeRecv(); got {
			q.f.count.receives.Add(1)
			return recv, verbs.WCSuccess, true
		}
		q.f.count.rnrNaks.Add(1)
		if st, _ := peer.State(); st == verbs.QPError {
			return verbs.RecvWR{}, verbs.WCRetryExcErr, true
		}
		if attr.RNRRetry != 7 && tries >= int(attr.RNRRetry) {
			return verbs.RecvWR{}, verbs.WCRNRRetryExcErr, true
		}
		if !q.sleep(q.f.cfg.RNRInterval) {
			return verbs.RecvWR{}, 0, false
		}
	}
}

// localBuffers resolves the work request's local memory (its inline data
// or its scatter list, checked against the local keys).
func (q *qp) localBuffers(it *sendItem) (local [][]byte, total uint64, ok bool) {
	w := &it.wr
	if it.inline != nil {
		return [][]byte{it.inline}, uint64(len(it.inline)), true
	}
	for _, s := range w.SGL {
		m := q.pd.lookup(s.LKey)
		if m == nil {
			return nil, 0, false
		}
		b, okm := m.slice(s.Addr, uint64(s.Length))
		if !okm || (w.Opcode == verbs.OpRDMARead && m.access&verbs.AccessLocalWrite == 0) {
			return nil, 0, false
		}
		local = append(local, b)
		total += uint64(s.Length)
	}
	return local, total, true
}

// rdma carries out a WRITE, WRITE with immediate or READ against the
// responder's memory, checked against its keys and access.
func (q *qp) rdma(peer *qp, w *verbs.SendWR, local [][]byte, total uint64, recv verbs.RecvWR, needRecv bool) (verbs.WCStatus, uint32) {
	want := verbs.AccessRemoteWrite
	if w.Opcode == verbs.OpRDMARead {
		want = verbs.AccessRemoteRead
	}
	m := peer.pd.lookup(w.RKey)
	peer.mu.Lock()
	qpAccess, depth := peer.attr.Access, peer.attr.MaxDestRdAtom
	peer.mu.Unlock()
	if w.Opcode == verbs.OpRDMARead {
		q.mu.Lock()
		mine := q.attr.MaxRdAtomic
		q.mu.Unlock()
		if mine > depth {
			// More READs may be in flight than the responder serves.
			if needRecv {
				peer.requeueRecv(recv)
			}
			return verbs.WCRemInvReqErr, 0
		}
	}
	var remote []byte
	okm := m != nil && m.access&want != 0 && qpAccess&want != 0
	if okm {
		remote, okm = m.slice(w.RemoteAddr, total)
	}
	if !okm {
		if needRecv {
			peer.requeueRecv(recv)
		}
		peer.toError()
		return verbs.WCRemAccessErr, 0
	}
	for _, b := range local {
		if w.Opcode == verbs.OpRDMARead {
			copy(b, remote)
		} else {
			copy(remote, b)
		}
		remote = remote[len(b):]
	}
	switch w.Opcode {
	case verbs.OpRDMAWriteWithImm:
		peer.rcq.push(verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCSuccess, Opcode: verbs.WCRecvRDMAWithIm, ByteLen: uint32(total), Imm: w.Imm, Flags: verbs.WCFlagWithImm, QPNum: peer.num})
	case verbs.OpRDMARead:
		return verbs.WCSuccess, uint32(total)
	}
	return verbs.WCSuccess, 0
}

// deliver carries out a SEND: it scatters the message into the receive
// buffers of recv.
func (q *qp) deliver(peer *qp, w *verbs.SendWR, local [][]byte, total uint64, recv verbs.RecvWR) verbs.WCStatus {
	var into [][]byte
	var room uint64
	for _, s := range recv.SGL {
		m := peer.pd.lookup(s.LKey)
		var b []byte
		okm := m != nil && m.access&verbs.AccessLocalWrite != 0
		if okm {
			b, okm = m.slice(s.Addr, uint64(s.Length))
		}
		if !okm {
			peer.rcq.push(verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCLocProtErr, Opcode: verbs.WCRecv, VendorErr: vendorLocProt, QPNum: peer.num})
			peer.toError()
			return verbs.WCRemOpErr
		}
		into = append(into, b)
		room += uint64(len(b))
	}
	if room < total {
		peer.rcq.push(verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCLocLenErr, Opcode: verbs.WCRecv, QPNum: peer.num})
		peer.toError()
		return verbs.WCRemInvReqErr
	}
	src := make([]byte, 0, total)
	for _, b := range local {
		src = append(src, b...)
	}
	for _, b := range into {
		n := copy(b, src)
		src = src[n:]
	}
	wc := verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCSuccess, Opcode: verbs.WCRecv, ByteLen: uint32(total), QPNum: peer.num}
	if w.Opcode == verbs.OpSendWithImm {
		wc.Imm, wc.Flags = w.Imm, verbs.WCFlagWithImm
	}
	peer.rcq.push(wc)
	return verbs.WCSuccess
}

// requeueRecv puts back a receive taken for a message that failed before
// it was delivered.
func (q *qp) requeueRecv(r verbs.RecvWR) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == verbs.QPRTR || q.state == verbs.QPRTS {
		q.rq = append([]verbs.RecvWR{r}, q.rq...)
	}
}
