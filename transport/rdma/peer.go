package rdma

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// peer is a remote engine this engine initiates transfers to.
type peer struct {
	key   string
	desc  core.EngineDesc
	conns []*conn

	mu     sync.Mutex
	mrs    map[uint32]remoteMR // rkeys learned by MR_QUERY
	closed bool

	aborts      []abortEntry // transfers to report failed to the target
	abortReason string
	flushing    bool
}

type remoteMR struct {
	size uint64
	keys []RemoteKey
}

func (p *peer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// AddPeer builds qp_per_transfer QPs to the peer and connects them through
// a CONNECT exchange over the control plane, so that the first transfer
// finds them ready.
func (b *Backend) AddPeer(desc core.EngineDesc) error {
	blob := desc.Blob(core.BackendRDMA)
	if blob == nil {
		return core.Errorf(core.ErrBadState, "rdma: engine %q publishes no RDMA backend (it may have fallen back to TCP); both engines must use the same data plane", desc.Key)
	}
	remote, err := decodeEngineBlob(blob)
	if err != nil {
		return core.Errorf(core.ErrInvalidArgs, "rdma: engine %q: %w", desc.Key, err)
	}
	p := &peer{key: desc.Key, desc: desc, mrs: make(map[uint32]remoteMR)}
	cleanup := func() {
		for _, c := range p.conns {
			c.close(core.Errorf(core.ErrConnection, "connection to %q failed", desc.Key))
		}
	}
	msg := message{Type: msgConnect, Flags: connectFull}
	for i := 0; i < b.s.qpPerTransfer; i++ {
		n, err := b.nicFor(i, func(l verbs.LinkLayer) bool {
			for _, r := range remote {
				if r.Link == l {
					return true
				}
			}
			return false
		})
		if err != nil {
			cleanup()
			return core.Errorf(core.ErrRDMAOp, "rdma: connect to %q: %w", desc.Key, err)
		}
		c, err := b.newConn(roleInitiator, desc.Key, uint8(i), n)
		if err != nil {
			cleanup()
			return core.Errorf(core.ErrRDMAOp, "rdma: connect to %q: %w", desc.Key, err)
		}
		c.peerRef = p
		p.conns = append(p.conns, c)
		msg.Endpoints = append(msg.Endpoints, qpEndpoint{Index: uint8(i), Endpoint: c.local})
	}
	reply, err := b.call(desc, &msg, msgConnected)
	if err == nil {
		err = b.applyConnected(p.conns, reply)
	}
	if err != nil {
		cleanup()
		return core.Errorf(core.CodeOf(err), "rdma: connect %d queue pairs to %q: %w", len(p.conns), desc.Key, err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cleanup()
		return core.Errorf(core.ErrBadState, "rdma backend closed")
	}
	old := b.peers[desc.Key]
	b.peers[desc.Key] = p
	b.mu.Unlock()
	if old != nil {
		old.close(core.Errorf(core.ErrConnection, "remote engine %q registered again", desc.Key))
	}
	b.log.Debug("rdma: peer connected", "peer", desc.Key, "qps", len(p.conns))
	return nil
}

// applyConnected moves conns to RTR and RTS against the endpoints of a
// CONNECTED reply.
func (b *Backend) applyConnected(conns []*conn, reply *message) error {
	if len(reply.Endpoints) != len(conns) {
		return core.Errorf(core.ErrRemote, "peer answered %d queue pairs for %d", len(reply.Endpoints), len(conns))
	}
	for _, e := range reply.Endpoints {
		var c *conn
		for _, x := range conns {
			if x.idx == e.Index {
				c = x
			}
		}
		if c == nil {
			return core.Errorf(core.ErrRemote, "peer answered for qp index %d, which was not asked", e.Index)
		}
		if err := c.connect(e.Endpoint); err != nil {
			return err
		}
	}
	return nil
}

// nicFor picks the NIC of the QP with index i: round-robin over the NICs
// whose link layer ok accepts.
func (b *Backend) nicFor(i int, ok func(verbs.LinkLayer) bool) (*nic, error) {
	var usable []*nic
	for _, n := range b.nics {
		if ok(n.link()) {
			usable = append(usable, n)
		}
	}
	if len(usable) == 0 {
		return nil, errors.New("no local NIC shares a link layer (InfiniBand or Ethernet) with the peer's")
	}
	return usable[i%len(usable)], nil
}

// call sends a control message to the peer's RDMA backend and decodes the
// answer, which must be of type want.
func (b *Backend) call(desc core.EngineDesc, m *message, want msgType) (*message, error) {
	if b.env.Call == nil {
		return nil, core.Errorf(core.ErrBadState, "no control plane to reach %q", desc.Key)
	}
	out, err := b.env.Call(desc, m.encode())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Type, err)
	}
	reply, err := decodeMessage(out)
	if err != nil {
		return nil, core.Errorf(core.ErrRemote, "answer to %s: %w", m.Type, err)
	}
	if reply.Type != want {
		return nil, core.Errorf(core.ErrRemote, "answer to %s is %s, want %s", m.Type, reply.Type, want)
	}
	return reply, nil
}

// Ready returns how many of the QPs to a peer are connected, and how many
// there are.
func (b *Backend) Ready(peer string) (ready, total int) {
	b.mu.Lock()
	p := b.peers[peer]
	b.mu.Unlock()
	if p == nil {
		return 0, 0
	}
	for _, c := range p.conns {
		if c.isReady() {
			ready++
		}
	}
	return ready, len(p.conns)
}

// RemovePeer closes the QPs to a peer; its transfers in flight fail. The
// peer is told to drop its side, without waiting for it.
func (b *Backend) RemovePeer(key string) {
	b.mu.Lock()
	p := b.peers[key]
	delete(b.peers, key)
	b.mu.Unlock()
	if p == nil {
		return
	}
	p.close(core.Errorf(core.ErrConnection, "remote engine %q was deregistered", key))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if _, err := b.call(p.desc, &message{Type: msgDisconnect}, msgOK); err != nil {
			b.log.Debug("rdma: disconnect", "peer", key, "err", err)
		}
	}()
}

func (p *peer) close(err error) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for _, c := range p.conns {
		c.close(err)
	}
}
