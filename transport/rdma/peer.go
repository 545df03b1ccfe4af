package rdma

import (
	"fmt"
	"sync"

	"github.com/mori-go/mori-go/core"
)

// peer is a remote engine this engine initiates transfers to.
type peer struct {
	key    string
	desc   core.EngineDesc
	remote []NICInfo // the peer's NICs, from its engine blob

	gone chan struct{} // closed when the peer is closed

	mu     sync.Mutex
	lanes  map[int]*lane       // by local NIC index
	mrs    map[uint32]remoteMR // rkeys learned by MR_QUERY
	closed bool
	// rebuilds counts the goroutines rebuilding this peer's QPs, so that
	// registering the peer again waits for them: a rebuild that reached
	// the peer after the new connection would replace the new QPs there.
	rebuilds sync.WaitGroup

	aborts      []abortEntry // transfers to report failed to the target
	abortReason string
	flushing    bool
}

// lane is the qp_per_transfer QPs to a peer from one local NIC. ready is
// closed once it is connected (conns) or failed (err).
type lane struct {
	nic   *nic
	ready chan struct{}
	conns []*conn
	err   error
}

func (l *lane) done() bool {
	select {
	case <-l.ready:
		return true
	default:
		return false
	}
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

// allConns returns the QPs of every connected lane.
func (p *peer) allConns() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*conn
	for _, l := range p.lanes {
		if l.done() {
			out = append(out, l.conns...)
		}
	}
	return out
}

// goRebuild runs f (rebuilding a QP of the peer) in a tracked goroutine,
// unless the peer or the backend is closed.
func (p *peer) goRebuild(b *Backend, f func()) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.rebuilds.Add(1)
	p.mu.Unlock()
	if !b.goTracked(func() { defer p.rebuilds.Done(); f() }) {
		p.rebuilds.Done()
		return false
	}
	return true
}

// AddPeer connects a lane of qp_per_transfer QPs to the peer from the
// default NIC through a CONNECT exchange over the control plane, so that
// the first transfer finds them ready. Lanes from other NICs connect when
// a transfer first needs them.
func (b *Backend) AddPeer(desc core.EngineDesc) error {
	blob := desc.Blob(core.BackendRDMA)
	if blob == nil {
		return core.Errorf(core.ErrBadState, "rdma: engine %q publishes no RDMA backend (it may have fallen back to TCP); both engines must use the same data plane", desc.Key)
	}
	remote, err := decodeEngineBlob(blob)
	if err != nil {
		return core.Errorf(core.ErrInvalidArgs, "rdma: engine %q: %w", desc.Key, err)
	}
	n, err := b.laneNIC(b.currentHome(), remote)
	if err != nil {
		return core.Errorf(core.ErrRDMAOp, "rdma: connect to %q: %w", desc.Key, err)
	}
	// One registration of a peer at a time: a second one's full CONNECT
	// would drop the first's QPs at the peer.
	lock, _ := b.adding.LoadOrStore(desc.Key, &sync.Mutex{})
	lock.(*sync.Mutex).Lock()
	defer lock.(*sync.Mutex).Unlock()
	b.mu.Lock()
	old := b.peers[desc.Key]
	delete(b.peers, desc.Key)
	b.mu.Unlock()
	if old != nil {
		old.close(core.Errorf(core.ErrConnection, "remote engine %q registered again", desc.Key))
		old.rebuilds.Wait()
	}
	p := &peer{key: desc.Key, desc: desc, remote: remote, gone: make(chan struct{}), lanes: make(map[int]*lane), mrs: make(map[uint32]remoteMR)}
	l := &lane{nic: n, ready: make(chan struct{})}
	p.lanes[n.idx] = l
	b.dial(p, l, connectFull)
	if l.err != nil {
		return l.err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		p.close(core.Errorf(core.ErrBadState, "rdma backend closed"))
		return core.Errorf(core.ErrBadState, "rdma backend closed")
	}
	b.peers[desc.Key] = p
	b.mu.Unlock()
	b.log.Debug("rdma: peer connected", "peer", desc.Key, "qps", len(l.conns), "device", n.name)
	return nil
}

// currentHome is the NIC of the memory registered last (the default NIC
// before any GPU memory).
func (b *Backend) currentHome() *nic {
	b.homeMu.Lock()
	defer b.homeMu.Unlock()
	if b.homes.target != nil {
		return b.homes.target
	}
	return b.fallback
}

// dial creates the lane's QPs, connects them through one CONNECT and
// closes l.ready. flags is connectFull for the first lane (the peer then
// drops whatever QPs this engine had there before).
func (b *Backend) dial(p *peer, l *lane, flags uint8) {
	defer close(l.ready)
	msg := message{Type: msgConnect, Flags: flags}
	var conns []*conn
	fail := func(err error) {
		for _, c := range conns {
			c.close(core.Errorf(core.ErrConnection, "connection to %q failed", p.key))
		}
		l.err = core.Errorf(core.CodeOf(err), "rdma: connect %d queue pairs on %s to %q: %w", b.s.qpPerTransfer, l.nic.name, p.key, err)
	}
	for i := 0; i < b.s.qpPerTransfer; i++ {
		c, err := b.newConn(roleInitiator, p.key, uint8(i), l.nic)
		if err != nil {
			fail(core.Errorf(core.ErrRDMAOp, "%w", err))
			return
		}
		c.peerRef = p
		conns = append(conns, c)
		msg.Endpoints = append(msg.Endpoints, qpEndpoint{Index: uint8(i), Endpoint: c.local})
	}
	reply, err := b.call(p.desc, &msg, msgConnected)
	if err == nil {
		err = b.applyConnected(conns, reply)
	}
	if err != nil {
		fail(err)
		return
	}
	l.conns = conns
}

// laneFor returns the connected lane from NIC n to the peer, dialing it
// first if needed (on the caller's goroutine). A lane whose dial failed is
// dialed again.
func (b *Backend) laneFor(p *peer, n *nic) (*lane, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, core.Errorf(core.ErrConnection, "remote engine %q was deregistered", p.key)
	}
	l := p.lanes[n.idx]
	start := l == nil || (l.done() && l.err != nil)
	if start {
		l = &lane{nic: n, ready: make(chan struct{})}
		p.lanes[n.idx] = l
	}
	p.mu.Unlock()
	if start {
		b.dial(p, l, 0)
		if p.isClosed() && l.err == nil {
			for _, c := range l.conns {
				c.close(core.Errorf(core.ErrConnection, "remote engine %q was deregistered", p.key))
			}
		}
	}
	<-l.ready
	return l, l.err
}

// readyLane returns the peer's lane from n if it is connected, without
// waiting.
func (p *peer) readyLane(n *nic) *lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.lanes[n.idx]; l != nil && l.done() && l.err == nil {
		return l
	}
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
	conns := p.allConns()
	for _, c := range conns {
		if c.isReady() {
			ready++
		}
	}
	return ready, len(conns)
}

// RemovePeer closes the QPs to a peer; its transfers in flight fail. The
// peer is told to drop its side, without waiting for it (once no rebuild
// of its QPs is under way).
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
		p.rebuilds.Wait()
		if _, err := b.call(p.desc, &message{Type: msgDisconnect}, msgOK); err != nil {
			b.log.Debug("rdma: disconnect", "peer", key, "err", err)
		}
	}()
}

func (p *peer) close(err error) {
	p.mu.Lock()
	if !p.closed {
		close(p.gone) // a rebuild waiting to try again gives up now
	}
	p.closed = true
	p.mu.Unlock()
	for _, c := range p.allConns() {
		c.close(err)
	}
}
