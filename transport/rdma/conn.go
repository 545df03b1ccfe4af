package rdma

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/verbs"
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
	wc     [32]verbs.WorkCompletion

	mu         sync.Mutex
	qp         verbs.QP
	cq         verbs.CQ
	local      Endpoint
	sgid       uint8 // GID table index of local.GID
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
	recs       []wrRec        // posted work requests not yet completed, in order
	queue      []*part        // parts waiting for send queue slots
	reposts    []verbs.RecvWR // receives consumed, to post again in one batch (target)
	scratch    []verbs.SendWR

	// Initiator: notification payload slots; target: receive slots.
	buf   *hostmem.Buffer
	bufMR verbs.MR
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
	wrs         []verbs.SendWR
	sges        []verbs.SGE
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
		c.depth = 1 // a target posts no sends: a send queue of one is the least a QP may have
	}
	var err error
	if c.buf, err = hostmem.Alloc(size); err != nil {
		return nil, err
	}
	if c.bufMR, err = n.pd.RegMR(c.buf.Addr(), uint64(size), verbs.AccessLocalWrite); err != nil {
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
	// Successive CQs take successive completion vectors, so that event
	// mode's interrupts spread over cores.
	vector := int(n.vectors.Add(1)-1) % n.ctx.CompVectors()
	cq, err := n.ctx.CreateCQ(cqe, n.ch, vector)
	if err != nil {
		return err
	}
	attr := verbs.QPInitAttr{SendCQ: cq, RecvCQ: cq, MaxSendWR: c.depth, MaxRecvWR: c.recv, MaxSendSGE: 1, MaxRecvSGE: 1, MaxInlineData: maxInline}
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
	init := verbs.QPAttr{State: verbs.QPInit, Port: n.port, PKeyIndex: c.b.s.PKeyIndex, Access: verbs.AccessLocalWrite | verbs.AccessRemoteWrite | verbs.AccessRemoteRead}
	if err := qp.Modify(&init, verbs.QPMaskInit); err != nil {
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
	a := n.address()
	c.local = Endpoint{QPN: qp.Num(), PSN: randomPSN(), GID: a.gid.GID, LID: a.lid, Port: n.port, MTU: n.mtu, Link: n.link(), NIC: uint8(n.idx),
		ReadDepth: clampAtomic(n.dev.MaxQPRdAtom)}
	c.sgid = uint8(a.gid.Index)
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

func clampAtomic(v int) uint8 { return uint8(max(1, min(v, maxReadDepth))) }

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
	rtr := verbs.QPAttr{
		State: verbs.QPRTR, PathMTU: min(local.MTU, r.MTU), DestQPN: r.QPN, RQPSN: r.PSN,
		MaxDestRdAtom: local.ReadDepth, MinRNRTimer: s.MinRNRTimer,
		AH: verbs.AHAttr{Port: n.port, SL: s.ServiceLevel, DLID: r.LID},
	}
	if local.Link == verbs.LinkEthernet || r.LID == 0 {
		rtr.AH.IsGlobal = true
		rtr.AH.DGID = r.GID
		rtr.AH.SGIDIndex = c.sgid
		rtr.AH.HopLimit = 64
		rtr.AH.TrafficClass = s.TrafficClass
	}
	if err := qp.Modify(&rtr, verbs.QPMaskRTR); err != nil {
		return core.Errorf(core.ErrRDMAOp, "qp %d to %q: INIT to RTR: %w", c.idx, c.peer, err)
	}
	rts := verbs.QPAttr{State: verbs.QPRTS, Timeout: s.Timeout, RetryCnt: s.RetryCnt, RNRRetry: s.RNRRetry, SQPSN: local.PSN, MaxRdAtomic: min(clampAtomic(n.dev.MaxQPInitRdAtom), r.ReadDepth)}
	if err := qp.Modify(&rts, verbs.QPMaskRTS); err != nil {
		return core.Errorf(core.ErrRDMAOp, "qp %d to %q: RTR to RTS: %w", c.idx, c.peer, err)
	}
	if c.role == roleTarget {
		wrs := make([]verbs.RecvWR, 0, 64)
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
	c.reposts = c.reposts[:0] // connect posted every receive slot
	c.gen++
	return nil
}

func (c *conn) recvWR(slot int) verbs.RecvWR {
	return verbs.RecvWR{ID: uint64(slot), SGL: []verbs.SGE{{Addr: uint64(c.buf.Addr()) + uint64(slot*recvSlot), Length: recvSlot, LKey: c.bufMR.LKey()}}}
}

func (c *conn) isReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateReady
}
