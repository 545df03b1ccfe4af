package rdma

import (
	"fmt"

	"github.com/mori-go/mori-go/core"
)

// HandleControl answers a peer's set-up message (see proto.go): CONNECT
// builds or rebuilds this engine's side of the peer's QPs, MR_QUERY returns
// the keys of a region registered before the backend existed, DISCONNECT
// drops the peer's QPs, ABORT marks transfers the peer gave up on as failed
// in the inbound table.
func (b *Backend) HandleControl(from string, body []byte) ([]byte, error) {
	m, err := decodeMessage(body)
	if err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "rdma: message from %q: %w", from, err)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, core.Errorf(core.ErrBadState, "rdma backend closed")
	}
	switch m.Type {
	case msgConnect:
		return b.handleConnect(from, m)
	case msgMRQuery:
		return b.handleMRQuery(m)
	case msgDisconnect:
		b.dropTargets(from)
		return (&message{Type: msgOK}).encode(), nil
	case msgAbort:
		reason := core.Errorf(core.ErrRemote, "initiator %q gave up on the transfer: %s", from, m.Reason)
		for _, a := range m.Aborts {
			b.env.Inbound.Refuse(core.InboundKey{Peer: from, UID: a.UID}, a.Instance, a.Parts, reason)
		}
		return (&message{Type: msgOK}).encode(), nil
	}
	return nil, core.Errorf(core.ErrInvalidArgs, "rdma: message from %q: unexpected %s", from, m.Type)
}

func (b *Backend) handleMRQuery(m *message) ([]byte, error) {
	if b.env.Registry == nil {
		return nil, core.Errorf(core.ErrNotFound, "memory %d is not registered", m.MemID)
	}
	r, err := b.env.Registry.Resolve(m.MemID, m.Token)
	if err != nil {
		return nil, err
	}
	if r.Size != m.Size {
		return nil, core.Errorf(core.ErrInvalidArgs, "memory %d is %d bytes, the descriptor says %d", m.MemID, r.Size, m.Size)
	}
	rm := regionOf(b, r)
	if rm == nil {
		return nil, core.Errorf(core.ErrBadState, "memory %d is not registered with the RDMA backend", m.MemID)
	}
	return (&message{Type: msgMRInfo, Blob: encodeMemoryBlob(rm.keys)}).encode(), nil
}

// targetKey names a QP of a peer on this engine: the peer's NIC (its lane)
// and the QP's index in the lane.
type targetKey struct{ nic, idx uint8 }

// dropTargets closes every QP of the peer on this engine.
func (b *Backend) dropTargets(from string) {
	b.mu.Lock()
	var drop []*conn
	for _, c := range b.targets[from] {
		drop = append(drop, c)
	}
	delete(b.targets, from)
	b.nTargets -= len(drop)
	b.mu.Unlock()
	for _, c := range drop {
		c.close(core.Errorf(core.ErrConnection, "peer %q disconnected", from))
	}
}

// handleConnect creates (or, for a peer reconnecting a QP, replaces) this
// engine's side of each QP named, connects it to the peer's endpoint and
// answers with its own endpoints.
func (b *Backend) handleConnect(from string, m *message) ([]byte, error) {
	b.targetMu.Lock()
	defer b.targetMu.Unlock()
	if m.Flags&connectFull != 0 {
		b.dropTargets(from)
	}
	b.mu.Lock()
	existing := make(map[targetKey]*conn)
	for k, c := range b.targets[from] {
		existing[k] = c
	}
	fresh := 0
	for _, e := range m.Endpoints {
		if existing[targetKey{e.NIC, e.Index}] == nil {
			fresh++
		}
	}
	full := b.nTargets+fresh > b.s.MaxTargetQPs
	b.mu.Unlock()
	if full {
		return nil, core.Errorf(core.ErrBadState, "rdma: %q asks for %d more queue pairs; this engine already serves %d, at most %d", from, fresh, b.nTargets, b.s.MaxTargetQPs)
	}
	reply := &message{Type: msgConnected}
	for _, e := range m.Endpoints {
		c, err := b.targetConn(from, e, existing[targetKey{e.NIC, e.Index}])
		if err != nil {
			return nil, err
		}
		if err := c.connect(e.Endpoint); err != nil {
			return nil, fmt.Errorf("rdma: connect qp %d for %q: %w", e.Index, from, err)
		}
		c.mu.Lock()
		reply.Endpoints = append(reply.Endpoints, qpEndpoint{Index: e.Index, Endpoint: c.local})
		c.mu.Unlock()
	}
	return reply.encode(), nil
}

// targetConn gives the QP of endpoint e a fresh QP on this engine: c
// rebuilt, or a new conn on the NIC of this engine's KV cache.
func (b *Backend) targetConn(from string, e qpEndpoint, c *conn) (*conn, error) {
	if c != nil {
		if err := c.replace(); err != nil {
			return nil, core.Errorf(core.ErrRDMAOp, "rdma: rebuild qp %d for %q: %w", e.Index, from, err)
		}
		return c, nil
	}
	n, err := b.targetNIC(e.Link)
	if err != nil {
		return nil, core.Errorf(core.ErrRDMAOp, "rdma: qp %d for %q (%s): %w", e.Index, from, e.Link, err)
	}
	if c, err = b.newConn(roleTarget, from, e.Index, n); err != nil {
		return nil, core.Errorf(core.ErrRDMAOp, "rdma: qp %d for %q: %w", e.Index, from, err)
	}
	b.mu.Lock()
	if b.targets[from] == nil {
		b.targets[from] = make(map[targetKey]*conn)
	}
	b.targets[from][targetKey{e.NIC, e.Index}] = c
	b.nTargets++
	b.mu.Unlock()
	return c, nil
}
