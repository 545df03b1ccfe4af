package verbs

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
)

type role uint8

const (
	roleInitiator role = 1 // posts WRITE/READ and the notification SEND
	roleTarget    role = 2 // receives notifications
)

type connState uint8

const (
	stateInit   connState = iota // QP in INIT, not connected yet
	stateReady                   // RTS, carrying work
	stateBroken                  // failed; being rebuilt (initiator) or waiting for the peer to reconnect (target)
	stateClosed
)

// conn is one RC queue pair with its own CQ, on one NIC, to one peer.
//
// Locking: pollMu serializes polling the CQ with destroying and rebuilding
// the QP and CQ; mu guards everything else. pollMu is taken before mu, and
// the backend's mu is never held while taking either.
type conn struct {
	b       *Backend
	role    role
	peer    string
	idx     uint8
	nic     *nic
	peerRef *peer // initiator only

	pollMu sync.Mutex
	wc     [32]WorkCompletion

	mu         sync.Mutex
	qp         QP
	cq         CQ
	local      Endpoint
	remote     Endpoint
	state      connState
	gen        uint64
	lastErr    error
	depth      int // send queue slots
	recv       int // receive queue slots (target)
	inline     bool
	rebuilding bool
	inflight   int
	seq        uint64
	recs       []wrRec // posted work requests not yet completed, in order
	queue      []*part // parts waiting for send queue slots
	scratch    []SendWR

	// Initiator: notification payload slots; target: receive slots.
	buf   *hostmem.Buffer
	bufMR MR
}

// wrRec is one posted work request.
type wrRec struct {
	seq  uint64
	part *part
	last bool // the part's last work request
}

// xfer is a transfer as the backend splits it over QPs.
type xfer struct {
	t       *core.Transfer
	p       *peer
	parts   int
	aborted atomic.Bool
}

// part is the share of a transfer carried by one QP: its work requests,
// with the notification SEND last when notification is on.
type part struct {
	x           *xfer
	wrs         []SendWR
	sges        []SGE
	notify      bool
	posted      int
	outstanding int
	dropped     bool
	released    bool
}

func (p *part) release() {
	if !p.released {
		p.released = true
		p.x.t.Local.Release()
	}
}

func (b *Backend) newConn(r role, peerKey string, idx uint8, n *nic) (*conn, error) {
	c := &conn{b: b, role: r, peer: peerKey, idx: idx, nic: n}
	c.depth = b.s.SendQueueDepth
	if n.dev.MaxQPWR > 0 {
		c.depth = min(c.depth, n.dev.MaxQPWR)
	}
	c.recv = 1
	size := c.depth * notifySlot
	if r == roleTarget {
		c.recv = b.s.RecvDepth
		if n.dev.MaxQPWR > 0 {
			c.recv = min(c.recv, n.dev.MaxQPWR)
		}
		size = c.recv * recvSlot
	}
	var err error
	if c.buf, err = hostmem.Alloc(size); err != nil {
		return nil, err
	}
	if c.bufMR, err = n.pd.RegMR(c.buf.Addr(), uint64(size), AccessLocalWrite); err != nil {
		c.buf.Free()
		return nil, fmt.Errorf("register notification buffer on %s: %w", n.name, err)
	}
	c.pollMu.Lock()
	err = c.build()
	c.pollMu.Unlock()
	if err != nil {
		c.bufMR.Close()
		c.buf.Free()
		return nil, err
	}
	b.addConn(c)
	return c, nil
}

// build creates the CQ and QP and moves the QP to INIT with a fresh PSN.
// pollMu is held.
func (c *conn) build() error {
	n := c.nic
	cqe := c.depth + c.recv + 1
	if n.dev.MaxCQE > 0 {
		cqe = min(cqe, n.dev.MaxCQE)
	}
	cq, err := n.ctx.CreateCQ(cqe, n.ch)
	if err != nil {
		return err
	}
	attr := QPInitAttr{SendCQ: cq, RecvCQ: cq, MaxSendWR: c.depth, MaxRecvWR: c.recv, MaxSendSGE: 1, MaxRecvSGE: 1, MaxInlineData: maxInline}
	qp, err := n.pd.CreateQP(attr)
	inline := true
	if err != nil {
		// Some providers refuse inline data; notifications then go from
		// the registered buffer.
		attr.MaxInlineData, inline = 0, false
		qp, err = n.pd.CreateQP(attr)
	}
	if err != nil {
		cq.Close()
		return err
	}
	init := QPAttr{State: QPInit, Port: n.port, Access: AccessLocalWrite | AccessRemoteWrite | AccessRemoteRead}
	if err := qp.Modify(&init, qpMaskInit); err != nil {
		qp.Close()
		cq.Close()
		return err
	}
	if c.b.s.eventMode {
		if err := cq.ReqNotify(false); err != nil {
			qp.Close()
			cq.Close()
			return err
		}
	}
	c.mu.Lock()
	c.qp, c.cq, c.inline, c.state = qp, cq, inline, stateInit
	c.local = Endpoint{QPN: qp.Num(), PSN: randomPSN(), GID: n.gid.GID, LID: n.attr.LID, Port: n.port, MTU: n.mtu, Link: n.link(), NIC: uint8(n.idx)}
	c.mu.Unlock()
	c.b.byCQ.Store(cq, c)
	n.qpns.Store(qp.Num(), c)
	return nil
}

// destroy destroys the QP and CQ: once it returns the NIC no longer works
// on the QP's behalf. pollMu is held.
func (c *conn) destroy() {
	c.mu.Lock()
	qp, cq := c.qp, c.cq
	c.qp, c.cq = nil, nil
	c.mu.Unlock()
	if qp != nil {
		c.nic.qpns.Delete(qp.Num())
		if err := qp.Close(); err != nil {
			c.b.log.Warn("rdma: destroy qp", "peer", c.peer, "qp", c.idx, "err", err)
		}
	}
	if cq != nil {
		c.b.byCQ.Delete(cq)
		if err := cq.Close(); err != nil {
			c.b.log.Warn("rdma: destroy cq", "peer", c.peer, "qp", c.idx, "err", err)
		}
	}
}

func clampAtomic(v int) uint8 { return uint8(max(1, min(v, 16))) }

// connect moves the QP from INIT to RTR and RTS against the remote
// endpoint and, on a target, posts the receive buffers.
func (c *conn) connect(r Endpoint) error {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	c.mu.Lock()
	qp, local, state := c.qp, c.local, c.state
	c.mu.Unlock()
	if state == stateClosed || qp == nil {
		return core.Errorf(core.ErrConnection, "qp %d to %q was closed", c.idx, c.peer)
	}
	n, s := c.nic, c.b.s
	if r.Link != local.Link {
		return core.Errorf(core.ErrRDMAOp, "qp %d to %q: peer NIC is %s, %s is %s", c.idx, c.peer, r.Link, n.name, local.Link)
	}
	rtr := QPAttr{
		State: QPRTR, PathMTU: min(local.MTU, r.MTU), DestQPN: r.QPN, RQPSN: r.PSN,
		MaxDestRdAtom: clampAtomic(n.dev.MaxQPRdAtom), MinRNRTimer: s.MinRNRTimer,
		AH: AHAttr{Port: n.port, SL: s.ServiceLevel, DLID: r.LID},
	}
	if local.Link == LinkEthernet || r.LID == 0 {
		rtr.AH.IsGlobal = true
		rtr.AH.DGID = r.GID
		rtr.AH.SGIDIndex = uint8(n.gid.Index)
		rtr.AH.HopLimit = 64
		rtr.AH.TrafficClass = s.TrafficClass
	}
	if err := qp.Modify(&rtr, qpMaskRTR); err != nil {
		return core.Errorf(core.ErrRDMAOp, "qp %d to %q: INIT to RTR: %w", c.idx, c.peer, err)
	}
	rts := QPAttr{State: QPRTS, Timeout: s.Timeout, RetryCnt: s.RetryCnt, RNRRetry: s.RNRRetry, SQPSN: local.PSN, MaxRdAtomic: clampAtomic(n.dev.MaxQPInitRdAtom)}
	if err := qp.Modify(&rts, qpMaskRTS); err != nil {
		return core.Errorf(core.ErrRDMAOp, "qp %d to %q: RTR to RTS: %w", c.idx, c.peer, err)
	}
	if c.role == roleTarget {
		wrs := make([]RecvWR, 0, 64)
		for slot := 0; slot < c.recv; slot++ {
			wrs = append(wrs, c.recvWR(slot))
			if len(wrs) == cap(wrs) || slot == c.recv-1 {
				if err := qp.PostRecv(wrs); err != nil {
					return core.Errorf(core.ErrRDMAOp, "qp %d to %q: post receives: %w", c.idx, c.peer, err)
				}
				wrs = wrs[:0]
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return core.Errorf(core.ErrConnection, "qp %d to %q was closed", c.idx, c.peer)
	}
	c.remote, c.state, c.lastErr, c.rebuilding = r, stateReady, nil, false
	c.gen++
	return nil
}

func (c *conn) recvWR(slot int) RecvWR {
	return RecvWR{ID: uint64(slot), SGL: []SGE{{Addr: uint64(c.buf.Addr()) + uint64(slot*recvSlot), Length: recvSlot, LKey: c.bufMR.LKey()}}}
}

// breakLocked records the first error of a ready conn and starts its
// recovery. mu is held.
func (c *conn) breakLocked(err error) {
	if c.state != stateReady {
		return
	}
	c.state, c.lastErr = stateBroken, err
	c.rebuilding = true // recover rebuilds it (initiator)
	gen := c.gen
	c.b.log.Warn("rdma: queue pair failed", "peer", c.peer, "qp", c.idx, "device", c.nic.name, "err", err)
	if !c.b.goTracked(func() { c.recover(gen) }) {
		c.rebuilding = false
		c.b.log.Debug("rdma: backend closing; queue pair not rebuilt", "peer", c.peer, "qp", c.idx)
	}
}

// takeLocked removes every posted and queued part. mu is held.
func (c *conn) takeLocked() []*part {
	seen := make(map[*part]bool)
	var ps []*part
	for _, r := range c.recs {
		if !seen[r.part] {
			seen[r.part] = true
			ps = append(ps, r.part)
		}
	}
	for _, p := range c.queue {
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	c.b.inflight.Add(-int64(c.inflight))
	c.recs, c.queue, c.inflight = nil, nil, 0
	return ps
}

// failParts ends the transfers of parts whose work was lost with err and
// gives their memory back. The QP is already destroyed, so nothing touches
// the memory any more.
func (c *conn) failParts(ps []*part, err error) {
	for _, p := range ps {
		p.x.t.Fail(core.CodeOf(err), "%v", err)
		p.release()
		c.b.abort(p.x, err)
	}
}

// recover tears down a failed QP, fails what it carried and, on an
// initiator, rebuilds it and connects it again through the control plane
// until that works, the peer goes or the backend closes.
func (c *conn) recover(gen uint64) {
	c.pollMu.Lock()
	c.mu.Lock()
	if c.gen != gen || c.state != stateBroken {
		c.mu.Unlock()
		c.pollMu.Unlock()
		return
	}
	ps := c.takeLocked()
	if c.role == roleTarget {
		c.rebuilding = false
	}
	err := c.lastErr
	c.mu.Unlock()
	c.destroy()
	c.pollMu.Unlock()
	c.failParts(ps, err)
	if c.role == roleTarget {
		return // the initiator reconnects it
	}
	c.reconnect()
}

// maxRebuilds bounds the attempts of one round of rebuilding; a later
// transfer to the peer starts another round.
const maxRebuilds = 8

// reconnect rebuilds the QP until that works, the peer goes, the peer
// refuses (its backend is closed, or full), or maxRebuilds attempts failed.
// The caller has set c.rebuilding; connect clears it when the QP is ready
// again (so that a failure right after belongs to a new round), and
// reconnect clears it when it gives up.
func (c *conn) reconnect() {
	wait := c.b.s.ReconnectBackoff
	for attempt := 1; attempt <= maxRebuilds && !c.peerRef.isClosed(); attempt++ {
		err := c.rebuild()
		if err == nil {
			c.b.log.Info("rdma: queue pair rebuilt", "peer", c.peer, "qp", c.idx, "attempt", attempt)
			return
		}
		c.b.log.Warn("rdma: rebuilding queue pair", "peer", c.peer, "qp", c.idx, "attempt", attempt, "err", err)
		c.mu.Lock()
		if c.state != stateClosed && c.state != stateReady {
			c.state = stateBroken
			c.lastErr = fmt.Errorf("rebuilding the queue pair failed: %w", err)
		}
		c.mu.Unlock()
		if core.CodeOf(err) == core.ErrRemote || !c.b.backoff(wait) {
			break
		}
		wait = min(2*wait, 5*time.Second)
	}
	c.mu.Lock()
	c.rebuilding = false
	c.mu.Unlock()
}

// retry starts a new round of rebuilding a broken initiator QP whose last
// round gave up.
func (c *conn) retry() {
	c.mu.Lock()
	again := c.role == roleInitiator && c.state == stateBroken && !c.rebuilding
	c.rebuilding = c.rebuilding || again
	c.mu.Unlock()
	if again && !c.b.goTracked(c.reconnect) {
		c.mu.Lock()
		c.rebuilding = false
		c.mu.Unlock()
	}
}

// rebuild makes a new QP and reconnects it to the peer.
func (c *conn) rebuild() error {
	c.pollMu.Lock()
	c.mu.Lock()
	closed := c.state == stateClosed
	c.mu.Unlock()
	if closed {
		c.pollMu.Unlock()
		return errors.New("closed")
	}
	c.destroy() // what an earlier attempt left, in whatever state
	err := c.build()
	c.mu.Lock()
	local := c.local
	c.mu.Unlock()
	c.pollMu.Unlock()
	if err != nil {
		return err
	}
	reply, err := c.b.call(c.peerRef.desc, &message{Type: msgConnect, Endpoints: []qpEndpoint{{Index: c.idx, Endpoint: local}}}, msgConnected)
	if err != nil {
		return err
	}
	return c.b.applyConnected([]*conn{c}, reply)
}

// replace gives a target conn a fresh QP for a peer that reconnects.
func (c *conn) replace() error {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return errors.New("closed")
	}
	c.state = stateInit
	ps := c.takeLocked()
	c.gen++ // a pending recover of the old QP must not touch the new one
	c.mu.Unlock()
	c.destroy()
	c.failParts(ps, core.Errorf(core.ErrConnection, "qp %d to %q was replaced", c.idx, c.peer))
	return c.build()
}

// close destroys the conn for good; its work fails with err.
func (c *conn) close(err error) {
	c.pollMu.Lock()
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		c.pollMu.Unlock()
		return
	}
	c.state = stateClosed
	ps := c.takeLocked()
	c.mu.Unlock()
	c.destroy()
	c.pollMu.Unlock()
	c.failParts(ps, err)
	c.b.dropConn(c)
	if cerr := c.bufMR.Close(); cerr != nil {
		c.b.log.Warn("rdma: deregister notification buffer", "peer", c.peer, "err", cerr)
	}
	c.buf.Free()
}

func (c *conn) isReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateReady
}

// enqueue queues a part and posts what the send queue has room for.
func (c *conn) enqueue(p *part) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateReady {
		err := c.lastErr
		if err == nil {
			err = errors.New("not connected")
		}
		p.x.t.Fail(core.ErrRDMAOp, "qp %d to %q is not usable: %v", c.idx, c.peer, err)
		p.release()
		c.b.abort(p.x, err)
		return
	}
	c.queue = append(c.queue, p)
	c.pumpLocked()
}

// pumpLocked posts queued work requests while the send queue has room, in
// chains of at most post_batch_size (one doorbell each). The last work
// request of each chain and of each part is signaled. Parts of transfers
// that ended meanwhile (a timeout, a failure on another QP) are dropped.
// mu is held.
func (c *conn) pumpLocked() {
	posted := false
	for c.state == stateReady && len(c.queue) > 0 && c.inflight < c.depth {
		room := min(c.depth-c.inflight, c.b.s.postBatch)
		c.scratch = c.scratch[:0]
		for room > 0 && len(c.queue) > 0 {
			p := c.queue[0]
			if p.x.t.Done() {
				// It failed (a timeout, another part): post no more of it.
				c.queue = c.queue[1:]
				p.dropped = true
				if p.outstanding == 0 {
					p.release()
				}
				c.b.abort(p.x, errors.New(p.x.t.Status.Message()))
				continue
			}
			w := p.wrs[p.posted]
			seq := c.seq
			c.seq++
			w.ID = seq
			last := p.posted == len(p.wrs)-1
			if last {
				w.Flags |= SendSignaled
			}
			if p.notify && last {
				off := int(seq%uint64(c.depth)) * notifySlot
				slot := c.buf.Bytes()[off : off+notifySlot]
				n := notification{Op: p.x.t.Op, UID: p.x.t.UID, Instance: p.x.t.Instance, Parts: uint32(p.x.parts), MemID: p.x.t.Remote.ID}
				payload := n.encode(slot)
				p.sges[len(p.sges)-1] = SGE{Addr: uint64(c.buf.Addr()) + uint64(off), Length: uint32(len(payload)), LKey: c.bufMR.LKey()}
				w.SGL = p.sges[len(p.sges)-1:]
				if c.inline {
					w.Flags |= SendInline
				}
			}
			c.scratch = append(c.scratch, w)
			c.recs = append(c.recs, wrRec{seq: seq, part: p, last: last})
			p.posted++
			p.outstanding++
			if p.posted == len(p.wrs) {
				c.queue = c.queue[1:]
			}
			room--
		}
		if len(c.scratch) == 0 {
			continue
		}
		c.scratch[len(c.scratch)-1].Flags |= SendSignaled
		c.inflight += len(c.scratch)
		c.b.inflight.Add(int64(len(c.scratch)))
		if err := c.qp.PostSend(c.scratch); err != nil {
			c.breakLocked(core.Errorf(core.ErrRDMAOp, "qp %d to %q (%s qpn %d): ibv_post_send of %d work requests: %w", c.idx, c.peer, c.nic.name, c.local.QPN, len(c.scratch), err))
			return
		}
		posted = true
	}
	if posted {
		c.b.wake()
	}
}

// retireLocked completes, in order, the posted work requests up to seq.
// mu is held.
func (c *conn) retireLocked(seq uint64) {
	n := 0
	for n < len(c.recs) && c.recs[n].seq <= seq {
		r := c.recs[n]
		n++
		p := r.part
		p.outstanding--
		switch {
		case r.last:
			p.release()
			p.x.t.PartDone()
		case p.dropped && p.outstanding == 0:
			p.release()
		}
	}
	if n == 0 {
		return
	}
	c.recs = c.recs[n:]
	c.inflight -= n
	c.b.inflight.Add(-int64(n))
	if len(c.recs) == 0 {
		c.recs = nil
	}
}

// handleLocked processes one completion. mu is held.
func (c *conn) handleLocked(wc *WorkCompletion) {
	if c.state != stateReady {
		return // a flush after the first error: recover fails the rest
	}
	if c.role == roleTarget {
		c.handleRecvLocked(wc)
		return
	}
	if wc.Status == WCSuccess {
		c.retireLocked(wc.ID)
		c.pumpLocked()
		return
	}
	if wc.ID > 0 {
		c.retireLocked(wc.ID - 1) // RC completes in order: those before it succeeded
	}
	c.breakLocked(c.wcError(wc))
}

func (c *conn) wcError(wc *WorkCompletion) error {
	op := "work request"
	if len(c.recs) > 0 && c.recs[0].seq == wc.ID {
		p := c.recs[0].part
		if p.notify && c.recs[0].last {
			op = "notification SEND"
		} else {
			op = "RDMA " + p.x.t.Op.String()
		}
	}
	msg := fmt.Sprintf("%s to peer %q on qp %d (%s port %d, qpn %d): %s, vendor error %#x", op, c.peer, c.idx, c.nic.name, c.nic.port, c.local.QPN, wc.Status, wc.VendorErr)
	if h := wc.Status.hint(); h != "" {
		msg += ": " + h
	}
	return &core.Error{Code: core.ErrRDMAOp, Msg: msg}
}

// handleRecvLocked records a notification on the target and gives the
// receive buffer back. mu is held.
func (c *conn) handleRecvLocked(wc *WorkCompletion) {
	if wc.Status != WCSuccess {
		c.breakLocked(core.Errorf(core.ErrRDMAOp, "receive on qp %d from %q (%s qpn %d): %s", c.idx, c.peer, c.nic.name, c.local.QPN, wc.Status))
		return
	}
	if wc.Opcode != WCRecv && wc.Opcode != WCRecvRDMAWithIm {
		return
	}
	slot := int(wc.ID)
	if slot < 0 || slot >= c.recv {
		c.b.log.Warn("rdma: completion for an unknown receive slot", "peer", c.peer, "slot", wc.ID)
		return
	}
	data := c.buf.Bytes()[slot*recvSlot : slot*recvSlot+int(min(wc.ByteLen, recvSlot))]
	if n, err := decodeNotification(data); err != nil {
		c.b.log.Warn("rdma: malformed notification", "peer", c.peer, "qp", c.idx, "err", err)
	} else {
		key := core.InboundKey{Peer: c.peer, UID: n.UID}
		if err := c.b.env.Inbound.Admit(key, n.Instance, n.Parts); err != nil {
			c.b.env.Inbound.Refuse(key, n.Instance, n.Parts, err)
		} else {
			c.b.env.Inbound.Complete(key, n.Instance, nil)
		}
	}
	if err := c.qp.PostRecv([]RecvWR{c.recvWR(slot)}); err != nil {
		c.breakLocked(core.Errorf(core.ErrRDMAOp, "repost receive on qp %d from %q: %w", c.idx, c.peer, err))
	}
}

// poll polls the CQ once (polling mode) and returns the completions seen.
func (c *conn) poll() int {
	if !c.pollMu.TryLock() {
		return 0 // being rebuilt
	}
	defer c.pollMu.Unlock()
	return c.drainLocked()
}

// drainLocked polls once and processes what it got. pollMu is held.
func (c *conn) drainLocked() int {
	c.mu.Lock()
	cq, ready := c.cq, c.state == stateReady
	c.mu.Unlock()
	if !ready || cq == nil {
		return 0
	}
	n, err := cq.Poll(c.wc[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.breakLocked(core.Errorf(core.ErrRDMAOp, "poll the CQ of qp %d to %q (%s): %w", c.idx, c.peer, c.nic.name, err))
		return 0
	}
	for i := 0; i < n; i++ {
		c.handleLocked(&c.wc[i])
	}
	return n
}

// pollEvent drains the CQ after a completion event and arms it again
// (event mode).
func (c *conn) pollEvent() {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	armed := false
	for {
		if c.drainLocked() > 0 {
			continue
		}
		if armed {
			return
		}
		c.mu.Lock()
		cq := c.cq
		c.mu.Unlock()
		if cq == nil {
			return
		}
		if err := cq.ReqNotify(false); err != nil {
			c.mu.Lock()
			c.breakLocked(core.Errorf(core.ErrRDMAOp, "arm the CQ of qp %d to %q: %w", c.idx, c.peer, err))
			c.mu.Unlock()
			return
		}
		armed = true // poll once more: a completion may have come before arming
	}
}
