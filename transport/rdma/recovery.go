package rdma

import (
	"errors"
	"fmt"
	"time"

	"github.com/mori-go/mori-go/core"
)

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
	if !c.goRecover(func() { c.recover(gen) }) {
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
		if core.CodeOf(err) == core.ErrRemote || !c.b.backoffUntil(wait, c.peerRef.gone) {
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
	if again && !c.goRecover(c.reconnect) {
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

// goRecover runs a step of recovery in a tracked goroutine: for an
// initiator, one its peer counts (see peer.rebuilds).
func (c *conn) goRecover(f func()) bool {
	if c.peerRef != nil {
		return c.peerRef.goRebuild(c.b, f)
	}
	return c.b.goTracked(f)
}
