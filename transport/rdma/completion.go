package rdma

import (
	"errors"
	"fmt"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

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
				w.Flags |= verbs.SendSignaled
			}
			if p.notify && last {
				off := int(seq%uint64(c.depth)) * notifySlot
				slot := c.buf.Bytes()[off : off+notifySlot]
				n := notification{Op: p.x.t.Op, UID: p.x.t.UID, Instance: p.x.t.Instance, Parts: uint32(p.x.parts), MemID: p.x.t.Remote.ID}
				payload := n.encode(slot)
				p.sges[len(p.sges)-1] = verbs.SGE{Addr: uint64(c.buf.Addr()) + uint64(off), Length: uint32(len(payload)), LKey: c.bufMR.LKey()}
				w.SGL = p.sges[len(p.sges)-1:]
				if c.inline {
					w.Flags |= verbs.SendInline
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
		c.scratch[len(c.scratch)-1].Flags |= verbs.SendSignaled
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
func (c *conn) handleLocked(wc *verbs.WorkCompletion) {
	if c.state != stateReady {
		return // a flush after the first error: recover fails the rest
	}
	if c.role == roleTarget {
		c.handleRecvLocked(wc)
		return
	}
	if wc.Status == verbs.WCSuccess {
		c.retireLocked(wc.ID)
		c.pumpLocked()
		return
	}
	if wc.ID > 0 {
		c.retireLocked(wc.ID - 1) // RC completes in order: those before it succeeded
	}
	c.breakLocked(c.wcError(wc))
}

func (c *conn) wcError(wc *verbs.WorkCompletion) error {
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
	if h := statusHint(wc.Status); h != "" {
		msg += ": " + h
	}
	return &core.Error{Code: core.ErrRDMAOp, Msg: msg}
}

// handleRecvLocked records a notification on the target and gives the
// receive buffer back. mu is held.
func (c *conn) handleRecvLocked(wc *verbs.WorkCompletion) {
	if wc.Status != verbs.WCSuccess {
		c.breakLocked(core.Errorf(core.ErrRDMAOp, "receive on qp %d from %q (%s qpn %d): %s", c.idx, c.peer, c.nic.name, c.local.QPN, wc.Status))
		return
	}
	if wc.Opcode != verbs.WCRecv && wc.Opcode != verbs.WCRecvRDMAWithIm {
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
	c.reposts = append(c.reposts, c.recvWR(slot))
	if len(c.reposts) >= recvRepostBatch {
		c.repostLocked()
	}
}

// repostLocked gives the consumed receive buffers back to the QP in one
// ibv_post_recv. mu is held.
func (c *conn) repostLocked() {
	if len(c.reposts) == 0 || c.state != stateReady {
		c.reposts = c.reposts[:0]
		return
	}
	err := c.qp.PostRecv(c.reposts)
	c.reposts = c.reposts[:0]
	if err != nil {
		c.breakLocked(core.Errorf(core.ErrRDMAOp, "repost receives on qp %d from %q: %w", c.idx, c.peer, err))
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
	c.repostLocked()
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

// statusHint explains the usual cause of an error status.
func statusHint(s verbs.WCStatus) string {
	switch s {
	case verbs.WCRetryExcErr:
		return "transport retry counter exceeded: the peer's NIC did not answer (unreachable peer, wrong GID or GID index, lossy fabric without PFC)"
	case verbs.WCRNRRetryExcErr:
		return "receiver not ready: the peer posted no receive buffer for the notification"
	case verbs.WCRemAccessErr:
		return "the peer refused the access: its memory region was deregistered, the rkey is stale, or the range exceeds the region"
	case verbs.WCLocProtErr, verbs.WCLocAccessErr:
		return "local memory protection error: the local memory region does not cover the range or was deregistered"
	case verbs.WCLocLenErr:
		return "local length error"
	case verbs.WCRemInvReqErr:
		return "the peer found the request invalid (length, opcode, or more RDMA READs in flight than it serves)"
	case verbs.WCRemOpErr:
		return "the peer could not complete the operation"
	case verbs.WCWRFlushErr:
		return "flushed: the queue pair had already gone to the error state"
	case verbs.WCFatalErr, verbs.WCGeneralErr:
		return "the NIC reported a fatal error"
	}
	return ""
}
