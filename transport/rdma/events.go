package rdma

import (
	"fmt"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// asyncLoop handles one NIC's asynchronous events:
//   - a QP or CQ gone fatal fails the QP's work at once (it may produce no
//     completion) and the QP is rebuilt;
//   - a port that comes up again or whose LID or GID table changed has its
//     address read again, so that rebuilt QPs carry the new one;
//   - a fatal device is given up: its QPs fail and are not rebuilt on it,
//     transfers move to another NIC of the same link layer (see deviceFatal).
func (b *Backend) asyncLoop(n *nic) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		ev, ok, err := n.ctx.WaitAsyncEvent(50 * time.Millisecond)
		if err != nil {
			b.log.Warn("rdma: waiting for async events", "device", n.name, "err", err)
			if !b.backoff(50 * time.Millisecond) {
				return
			}
			continue
		}
		if ok && !b.handleAsync(n, ev) {
			return
		}
	}
}

// handleAsync handles one event; it reports false once the device is dead
// (no more events are read from it).
func (b *Backend) handleAsync(n *nic, ev verbs.AsyncEvent) bool {
	var victims []*conn
	switch ev.Type {
	case verbs.EventQPFatal, verbs.EventQPReqErr, verbs.EventQPAccessErr:
		if v, ok := n.qpns.Load(ev.QPNum); ok {
			victims = append(victims, v.(*conn))
		}
	case verbs.EventCQErr:
		if v, ok := b.byCQ.Load(ev.CQ); ok {
			victims = append(victims, v.(*conn))
		}
	case verbs.EventDeviceFatal:
		b.deviceFatal(n)
		return false
	case verbs.EventPortErr:
		b.log.Warn("rdma: port went down", "device", n.name, "port", ev.Port)
	case verbs.EventPortActive, verbs.EventLIDChange, verbs.EventGIDChange, verbs.EventClientReregister:
		if ev.Port == n.port {
			b.refreshAddress(n, ev.Type)
		}
	default:
		b.log.Debug("rdma: async event", "device", n.name, "event", ev.Type)
	}
	for _, c := range victims {
		c.mu.Lock()
		c.breakLocked(&core.Error{Code: core.ErrRDMAOp, Msg: fmt.Sprintf("rdma qp %d to peer %q (%s port %d, qpn %d): async event %s", c.idx, c.peer, n.name, n.port, c.local.QPN, ev.Type)})
		c.mu.Unlock()
	}
	return true
}

// deviceFatal gives a dead device up. Its QPs fail with the event (their
// transfers end at once) and are dropped rather than rebuilt on a context
// that cannot work again; an initiator's next transfer connects a lane on
// another NIC of the same link layer, and a peer reconnecting finds this
// engine's side on one. Memory stays registered with the other NICs, whose
// keys every descriptor already carries. Without another NIC, transfers
// fail with an error naming the dead device. The device is not reopened:
// see docs/rdma.md.
func (b *Backend) deviceFatal(n *nic) {
	n.dead.Store(true)
	b.log.Error("rdma: device fatal error: no longer used", "device", n.name, "port", n.port)
	err := &core.Error{Code: core.ErrRDMAOp, Msg: fmt.Sprintf("rdma device %s port %d failed (IBV_EVENT_DEVICE_FATAL); its queue pairs are given up", n.name, n.port)}
	b.mu.Lock()
	peers := make([]*peer, 0, len(b.peers))
	for _, p := range b.peers {
		peers = append(peers, p)
	}
	var targets []*conn
	for from, cs := range b.targets {
		for k, c := range cs {
			if c.nic == n {
				targets = append(targets, c)
				delete(cs, k)
				b.nTargets--
			}
		}
		if len(cs) == 0 {
			delete(b.targets, from)
		}
	}
	b.mu.Unlock()
	for _, p := range peers {
		for _, c := range p.dropLane(n) {
			c.close(err)
		}
	}
	for _, c := range targets {
		c.close(err)
	}
}

// dropLane removes the peer's lane from n and returns its QPs.
func (p *peer) dropLane(n *nic) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lanes[n.idx]
	if l == nil || !l.done() {
		return nil
	}
	delete(p.lanes, n.idx)
	return l.conns
}
