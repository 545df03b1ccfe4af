package sim

import (
	"fmt"
	"sync"
	"syscall"
	"time"

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

type sendItem struct {
	wr     verbs.SendWR
	inline []byte
	gen    uint64
}

type qp struct {
	f    *Fabric
	d    *Device
	pd   *pd
	ctx  *context
	num  uint32
	scq  *cq
	rcq  *cq
	caps verbs.QPInitAttr

	mu    sync.Mutex
	state verbs.QPState
	attr  verbs.QPAttr
	sq    []sendItem
	rq    []verbs.RecvWR
	busy  int
	gen   uint64

	kick chan struct{}
	quit chan struct{}
	done chan struct{}
}

func newQP(p *pd, a verbs.QPInitAttr) (*qp, error) {
	scq, ok1 := a.SendCQ.(*cq)
	rcq, ok2 := a.RecvCQ.(*cq)
	if !ok1 || !ok2 || scq == nil || rcq == nil {
		return nil, fmt.Errorf("sim: create qp without CQs: %w", syscall.EINVAL)
	}
	d := p.ctx.d
	if a.MaxSendWR <= 0 || a.MaxSendWR > d.spec.MaxQPWR || a.MaxRecvWR < 0 || a.MaxRecvWR > d.spec.MaxQPWR ||
		a.MaxSendSGE > 30 || a.MaxRecvSGE > 30 || a.MaxInlineData > 256 {
		return nil, fmt.Errorf("sim: create qp (send %d recv %d sge %d/%d inline %d): %w", a.MaxSendWR, a.MaxRecvWR, a.MaxSendSGE, a.MaxRecvSGE, a.MaxInlineData, syscall.EINVAL)
	}
	q := &qp{f: d.f, d: d, pd: p, ctx: p.ctx, num: d.f.newQPN(), scq: scq, rcq: rcq, caps: a,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	for _, c := range []*cq{scq, rcq} {
		c.mu.Lock()
		c.qps[q] = true
		c.mu.Unlock()
	}
	p.mu.Lock()
	p.qps++
	p.mu.Unlock()
	d.mu.Lock()
	d.qps[q.num] = q
	d.mu.Unlock()
	go q.worker()
	return q, nil
}

func (q *qp) Num() uint32 { return q.num }

func (q *qp) State() (verbs.QPState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.state, nil
}

func einval(format string, args ...any) error {
	return fmt.Errorf("sim: "+format+": %w", append(args, syscall.EINVAL)...)
}

// Modify checks a transition as ibv_modify_qp does for an RC QP: the
// allowed state changes and the attributes each requires.
func (q *qp) Modify(a *verbs.QPAttr, mask verbs.QPAttrMask) error {
	if mask&verbs.QPAttrState == 0 {
		return einval("modify qp %d without a state", q.num)
	}
	need := func(m verbs.QPAttrMask, what string) error {
		if mask&m != m {
			return einval("modify qp %d to %s: attribute mask %#x lacks %#x", q.num, what, uint32(mask), uint32(m&^mask))
		}
		return nil
	}
	q.mu.Lock()
	cur := q.state
	var err error
	switch {
	case a.State == verbs.QPReset:
		q.gen++
		q.sq, q.rq, q.busy, q.attr, q.state = nil, nil, 0, verbs.QPAttr{}, verbs.QPReset
		q.mu.Unlock()
		return nil
	case a.State == verbs.QPError:
		q.mu.Unlock()
		q.toError()
		return nil
	case cur == verbs.QPReset && a.State == verbs.QPInit, cur == verbs.QPInit && a.State == verbs.QPInit:
		if cur == verbs.QPReset {
			err = need(verbs.QPAttrState|verbs.QPAttrPKeyIndex|verbs.QPAttrPort|verbs.QPAttrAccessFlags, "INIT")
		}
		if err == nil && mask&verbs.QPAttrPort != 0 && a.Port != 1 {
			err = einval("modify qp %d to INIT: port %d", q.num, a.Port)
		}
	case cur == verbs.QPInit && a.State == verbs.QPRTR:
		err = need(verbs.QPAttrState|verbs.QPAttrAV|verbs.QPAttrPathMTU|verbs.QPAttrDestQPN|verbs.QPAttrRQPSN|verbs.QPAttrMaxDestRdAtom|verbs.QPAttrMinRNRTimer, "RTR")
		if err == nil {
			err = q.checkAH(a)
		}
	case cur == verbs.QPRTR && a.State == verbs.QPRTS:
		err = need(verbs.QPAttrState|verbs.QPAttrTimeout|verbs.QPAttrRetryCnt|verbs.QPAttrRNRRetry|verbs.QPAttrSQPSN|verbs.QPAttrMaxQPRdAtomic, "RTS")
		if err == nil && (a.RetryCnt > 7 || a.RNRRetry > 7) {
			err = einval("modify qp %d to RTS: retry %d rnr retry %d", q.num, a.RetryCnt, a.RNRRetry)
		}
	case cur == verbs.QPRTS && a.State == verbs.QPRTS:
	default:
		err = einval("modify qp %d from %s to %s", q.num, cur, a.State)
	}
	if err != nil {
		q.mu.Unlock()
		return err
	}
	apply(&q.attr, a, mask)
	q.state = a.State
	q.mu.Unlock()
	return nil
}

func (q *qp) checkAH(a *verbs.QPAttr) error {
	if a.PathMTU.Bytes() == 0 || a.PathMTU > q.d.spec.MTU {
		return einval("modify qp %d to RTR: path MTU %d above the port's %d", q.num, a.PathMTU.Bytes(), q.d.spec.MTU.Bytes())
	}
	if a.DestQPN == 0 || a.DestQPN >= 1<<24 || a.RQPSN >= 1<<24 {
		return einval("modify qp %d to RTR: dest qpn %d rq psn %d", q.num, a.DestQPN, a.RQPSN)
	}
	if q.d.spec.Link == verbs.LinkEthernet && !a.AH.IsGlobal {
		return einval("modify qp %d to RTR: RoCE needs a global route (is_global, dgid)", q.num)
	}
	if a.AH.IsGlobal {
		idx := int(a.AH.SGIDIndex)
		if a.AH.DGID.IsZero() || idx >= len(q.d.gids) || q.d.gids[idx].GID.IsZero() {
			return einval("modify qp %d to RTR: dgid %s, sgid index %d", q.num, a.AH.DGID, idx)
		}
	} else if a.AH.DLID == 0 {
		return einval("modify qp %d to RTR: no dlid", q.num)
	}
	return nil
}

func apply(dst *verbs.QPAttr, a *verbs.QPAttr, m verbs.QPAttrMask) {
	if m&verbs.QPAttrPort != 0 {
		dst.Port = a.Port
	}
	if m&verbs.QPAttrPKeyIndex != 0 {
		dst.PKeyIndex = a.PKeyIndex
	}
	if m&verbs.QPAttrAccessFlags != 0 {
		dst.Access = a.Access
	}
	if m&verbs.QPAttrAV != 0 {
		dst.AH = a.AH
	}
	if m&verbs.QPAttrPathMTU != 0 {
		dst.PathMTU = a.PathMTU
	}
	if m&verbs.QPAttrDestQPN != 0 {
		dst.DestQPN = a.DestQPN
	}
	if m&verbs.QPAttrRQPSN != 0 {
		dst.RQPSN = a.RQPSN
	}
	if m&verbs.QPAttrSQPSN != 0 {
		dst.SQPSN = a.SQPSN
	}
	if m&verbs.QPAttrTimeout != 0 {
		dst.Timeout = a.Timeout
	}
	if m&verbs.QPAttrRetryCnt != 0 {
		dst.RetryCnt = a.RetryCnt
	}
	if m&verbs.QPAttrRNRRetry != 0 {
		dst.RNRRetry = a.RNRRetry
	}
	if m&verbs.QPAttrMinRNRTimer != 0 {
		dst.MinRNRTimer = a.MinRNRTimer
	}
	if m&verbs.QPAttrMaxQPRdAtomic != 0 {
		dst.MaxRdAtomic = a.MaxRdAtomic
	}
	if m&verbs.QPAttrMaxDestRdAtom != 0 {
		dst.MaxDestRdAtom = a.MaxDestRdAtom
	}
}

// toError moves the QP to the error state: its receives are flushed at
// once, its sends as the worker reaches them.
func (q *qp) toError() {
	q.mu.Lock()
	if q.state == verbs.QPError || q.state == verbs.QPReset {
		q.mu.Unlock()
		return
	}
	q.state = verbs.QPError
	rq := q.rq
	q.rq = nil
	q.mu.Unlock()
	for _, r := range rq {
		q.rcq.push(verbs.WorkCompletion{ID: r.ID, Status: verbs.WCWRFlushErr, Opcode: verbs.WCRecv, VendorErr: vendorFlush, QPNum: q.num})
	}
	q.wake()
}

func (q *qp) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *qp) PostSend(wrs []verbs.SendWR) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state != verbs.QPRTS && q.state != verbs.QPError {
		return &verbs.PostError{Index: 0, Errno: syscall.EINVAL}
	}
	for i, w := range wrs {
		if q.busy >= q.caps.MaxSendWR {
			return &verbs.PostError{Index: i, Errno: syscall.ENOMEM}
		}
		if len(w.SGL) > max(q.caps.MaxSendSGE, 1) {
			return &verbs.PostError{Index: i, Errno: syscall.EINVAL}
		}
		switch w.Opcode {
		case verbs.OpRDMAWrite, verbs.OpRDMAWriteWithImm, verbs.OpRDMARead, verbs.OpSend, verbs.OpSendWithImm:
		default:
			return &verbs.PostError{Index: i, Errno: syscall.EINVAL}
		}
		it := sendItem{wr: w, gen: q.gen}
		it.wr.SGL = append([]verbs.SGE(nil), w.SGL...)
		if w.Flags&verbs.SendInline != 0 {
			if w.Opcode == verbs.OpRDMARead {
				return &verbs.PostError{Index: i, Errno: syscall.EINVAL}
			}
			total := 0
			for _, s := range w.SGL {
				total += int(s.Length)
			}
			if total > q.caps.MaxInlineData {
				return &verbs.PostError{Index: i, Errno: syscall.EINVAL}
			}
			for _, s := range w.SGL {
				it.inline = append(it.inline, memory(uintptr(s.Addr), uint64(s.Length))...)
			}
		}
		q.sq = append(q.sq, it)
		q.busy++
	}
	q.wake()
	return nil
}

func (q *qp) PostRecv(wrs []verbs.RecvWR) error {
	q.mu.Lock()
	if q.state == verbs.QPReset {
		q.mu.Unlock()
		return &verbs.PostError{Index: 0, Errno: syscall.EINVAL}
	}
	var flush []verbs.RecvWR
	for i, w := range wrs {
		if len(q.rq) >= q.caps.MaxRecvWR || len(w.SGL) > max(q.caps.MaxRecvSGE, 1) {
			q.mu.Unlock()
			return &verbs.PostError{Index: i, Errno: syscall.ENOMEM}
		}
		w.SGL = append([]verbs.SGE(nil), w.SGL...)
		if q.state == verbs.QPError {
			flush = append(flush, w)
		} else {
			q.rq = append(q.rq, w)
		}
	}
	q.mu.Unlock()
	for _, r := range flush {
		q.rcq.push(verbs.WorkCompletion{ID: r.ID, Status: verbs.WCWRFlushErr, Opcode: verbs.WCRecv, VendorErr: vendorFlush, QPNum: q.num})
	}
	return nil
}

// Close destroys the QP; once it returns the worker has stopped and no
// work request of this QP touches memory.
func (q *qp) Close() error {
	q.mu.Lock()
	select {
	case <-q.quit:
		q.mu.Unlock()
		return einval("destroy qp %d twice", q.num)
	default:
	}
	q.gen++
	q.sq, q.rq, q.state = nil, nil, verbs.QPReset
	close(q.quit)
	q.mu.Unlock()
	<-q.done
	q.d.mu.Lock()
	delete(q.d.qps, q.num)
	q.d.mu.Unlock()
	for _, c := range []*cq{q.scq, q.rcq} {
		c.mu.Lock()
		delete(c.qps, q)
		c.mu.Unlock()
	}
	q.pd.mu.Lock()
	q.pd.qps--
	q.pd.mu.Unlock()
	return nil
}

// sleep waits d unless the QP is destroyed meanwhile.
func (q *qp) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.quit:
		return false
	}
}

// worker executes the send queue in order, as the NIC does for one QP.
func (q *qp) worker() {
	defer close(q.done)
	for {
		select {
		case <-q.quit:
			return
		case <-q.kick:
		}
		for {
			q.mu.Lock()
			if len(q.sq) == 0 {
				q.mu.Unlock()
				break
			}
			it := q.sq[0]
			q.sq = q.sq[1:]
			state, gen := q.state, q.gen
			q.mu.Unlock()
			if it.gen != gen {
				continue
			}
			status, ok := verbs.WCSuccess, true
			var byteLen uint32
			if state == verbs.QPError {
				status = verbs.WCWRFlushErr
			} else {
				status, byteLen, ok = q.execute(&it)
				if !ok {
					return // destroyed
				}
			}
			q.mu.Lock()
			stale := q.gen != gen
			if !stale {
				q.busy--
			}
			q.mu.Unlock()
			if stale {
				continue
			}
			if status != verbs.WCSuccess || it.wr.Flags&verbs.SendSignaled != 0 {
				q.scq.push(verbs.WorkCompletion{ID: it.wr.ID, Status: status, Opcode: wcOpcode(it.wr.Opcode), VendorErr: vendorErr(status), ByteLen: byteLen, QPNum: q.num})
			}
			if status != verbs.WCSuccess && status != verbs.WCWRFlushErr {
				q.toError()
			}
		}
	}
}

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
	dst := f.route(attr.AH)
	// The transport: a lost packet (or a responder that is gone or not
	// connected to us) is retransmitted up to retry_cnt times.
	var peer *qp
	for attempt := 0; ; attempt++ {
		peer = nil
		if dst != nil {
			dst.mu.Lock()
			peer = dst.qps[attr.DestQPN]
			dst.mu.Unlock()
		}
		if !f.lose(q.d, dst) && peer != nil && peer.accepts(q, attr.SQPSN) {
			break
		}
		if attempt >= int(attr.RetryCnt) {
			return verbs.WCRetryExcErr, 0, true
		}
		if !q.sleep(f.cfg.RetryInterval) {
			return 0, 0, false
		}
	}
	w := &it.wr
	var recv verbs.RecvWR
	needRecv := w.Opcode == verbs.OpSend || w.Opcode == verbs.OpSendWithImm || w.Opcode == verbs.OpRDMAWriteWithImm
	if needRecv {
		for tries := 0; ; tries++ {
			var got bool
			if recv, got = peer.takeRecv(); got {
				break
			}
			if st, _ := peer.State(); st == verbs.QPError {
				return verbs.WCRetryExcErr, 0, true
			}
			if attr.RNRRetry != 7 && tries >= int(attr.RNRRetry) {
				return verbs.WCRNRRetryExcErr, 0, true
			}
			if !q.sleep(f.cfg.RNRInterval) {
				return 0, 0, false
			}
		}
	}
	f.dma.RLock()
	defer f.dma.RUnlock()
	// Local memory.
	var local [][]byte
	var total uint64
	if it.inline != nil {
		local = [][]byte{it.inline}
		total = uint64(len(it.inline))
	} else {
		for _, s := range w.SGL {
			m := q.pd.lookup(s.LKey)
			var b []byte
			okm := m != nil
			if okm {
				b, okm = m.slice(s.Addr, uint64(s.Length))
			}
			if okm && w.Opcode == verbs.OpRDMARead && m.access&verbs.AccessLocalWrite == 0 {
				okm = false
			}
			if !okm {
				if needRecv {
					peer.requeueRecv(recv)
				}
				return verbs.WCLocProtErr, 0, true
			}
			local = append(local, b)
			total += uint64(s.Length)
		}
	}
	remoteFail := func() (verbs.WCStatus, uint32, bool) {
		if needRecv {
			peer.requeueRecv(recv)
		}
		peer.toError()
		return verbs.WCRemAccessErr, 0, true
	}
	switch w.Opcode {
	case verbs.OpRDMAWrite, verbs.OpRDMAWriteWithImm, verbs.OpRDMARead:
		want := verbs.AccessRemoteWrite
		if w.Opcode == verbs.OpRDMARead {
			want = verbs.AccessRemoteRead
		}
		m := peer.pd.lookup(w.RKey)
		peer.mu.Lock()
		qpAccess := peer.attr.Access
		peer.mu.Unlock()
		if m == nil || m.access&want == 0 || qpAccess&want == 0 {
			return remoteFail()
		}
		remote, okm := m.slice(w.RemoteAddr, total)
		if !okm {
			return remoteFail()
		}
		for _, b := range local {
			if w.Opcode == verbs.OpRDMARead {
				copy(b, remote)
			} else {
				copy(remote, b)
			}
			remote = remote[len(b):]
		}
		if w.Opcode == verbs.OpRDMAWriteWithImm {
			peer.rcq.push(verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCSuccess, Opcode: verbs.WCRecvRDMAWithIm, ByteLen: uint32(total), Imm: w.Imm, Flags: verbs.WCFlagWithImm, QPNum: peer.num})
		}
		if w.Opcode == verbs.OpRDMARead {
			return verbs.WCSuccess, uint32(total), true
		}
		return verbs.WCSuccess, 0, true
	}
	// SEND: scatter into the receive buffers.
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
			return verbs.WCRemOpErr, 0, true
		}
		into = append(into, b)
		room += uint64(len(b))
	}
	if room < total {
		peer.rcq.push(verbs.WorkCompletion{ID: recv.ID, Status: verbs.WCLocLenErr, Opcode: verbs.WCRecv, QPNum: peer.num})
		peer.toError()
		return verbs.WCRemInvReqErr, 0, true
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
	return verbs.WCSuccess, 0, true
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
