package sim

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/mori-go/mori-go/verbs"
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
		if err == nil && int(a.MaxDestRdAtom) > q.d.spec.ReadDepth {
			err = einval("modify qp %d to RTR: max_dest_rd_atomic %d above the device's %d", q.num, a.MaxDestRdAtom, q.d.spec.ReadDepth)
		}
	case cur == verbs.QPRTR && a.State == verbs.QPRTS:
		err = need(verbs.QPAttrState|verbs.QPAttrTimeout|verbs.QPAttrRetryCnt|verbs.QPAttrRNRRetry|verbs.QPAttrSQPSN|verbs.QPAttrMaxQPRdAtomic, "RTS")
		if err == nil && (a.RetryCnt > 7 || a.RNRRetry > 7) {
			err = einval("modify qp %d to RTS: retry %d rnr retry %d", q.num, a.RetryCnt, a.RNRRetry)
		}
		if err == nil && int(a.MaxRdAtomic) > q.d.spec.ReadDepth {
			err = einval("modify qp %d to RTS: max_rd_atomic %d above the device's %d", q.num, a.MaxRdAtomic, q.d.spec.ReadDepth)
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
		if a.AH.DGID.IsZero() || idx >= gidTableLen || q.d.gid(idx).GID.IsZero() {
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
