package verbs

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mori-go/mori-go/core"
)

// nic is one port of one device that the backend uses.
type nic struct {
	idx  int
	name string
	ctx  Context
	pd   PD
	ch   CompChannel // event mode only
	dev  DeviceAttr
	port uint8
	attr PortAttr
	gid  GIDEntry
	mtu  MTU // path MTU cap: the active MTU, or less if configured

	qpns sync.Map // qpn -> *conn, for async events
}

func (n *nic) info() NICInfo {
	return NICInfo{Name: n.name, GID: n.gid.GID, LID: n.attr.LID, Port: n.port, MTU: n.mtu, Link: n.link()}
}

func (n *nic) link() LinkLayer {
	if n.attr.LinkLayer == LinkEthernet {
		return LinkEthernet
	}
	return LinkInfiniBand
}

// regionMRs is what the backend attaches to a registered region: one MR
// per NIC.
type regionMRs struct {
	mrs  []MR
	keys []RemoteKey
}

// Backend is the RDMA data plane of one engine. It implements
// core.Backend, core.MemoryBackend and core.ControlHandler.
type Backend struct {
	env  core.BackendEnv
	s    *settings
	log  *slog.Logger
	nics []*nic
	blob []byte

	targetMu sync.Mutex // serializes CONNECTs
	mu       sync.Mutex
	peers    map[string]*peer           // this engine as initiator
	targets  map[string]map[uint8]*conn // this engine as target: peer -> QP index -> conn
	nTargets int
	closed   bool

	conns    atomic.Pointer[[]*conn] // every conn, for the polling loop
	connsMu  sync.Mutex
	byCQ     sync.Map // CQ -> *conn, for event mode
	inflight atomic.Int64
	kick     chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
}

var (
	_ core.Backend        = (*Backend)(nil)
	_ core.MemoryBackend  = (*Backend)(nil)
	_ core.ControlHandler = (*Backend)(nil)
)

func newBackend(p Provider, env core.BackendEnv, s *settings) (*Backend, error) {
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	if env.Inbound == nil {
		env.Inbound = core.NewInboundTable(0)
	}
	ports, err := openPorts(p, s)
	if err != nil {
		return nil, err
	}
	ports, why := choosePorts(ports, s, env)
	b := &Backend{
		env:     env,
		s:       s,
		log:     env.Logger.With("backend", "rdma"),
		peers:   make(map[string]*peer),
		targets: make(map[string]map[uint8]*conn),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	b.conns.Store(&[]*conn{})
	for i, pc := range ports {
		n, err := b.setupNIC(i, pc)
		if err != nil {
			for _, q := range ports[i:] {
				q.ctx.Close()
			}
			b.teardownNICs()
			return nil, err
		}
		b.nics = append(b.nics, n)
	}
	infos := make([]NICInfo, len(b.nics))
	for i, n := range b.nics {
		infos[i] = n.info()
		b.log.Info("rdma nic", "device", n.name, "port", n.port, "link", n.link(), "gid", n.gid.GID, "gid_index", n.gid.Index,
			"gid_type", n.gid.Type, "lid", n.attr.LID, "mtu", n.mtu.Bytes(), "why", why)
	}
	b.blob = encodeEngineBlob(infos)
	b.log.Info("rdma backend up", "settings", s.String())
	if s.eventMode {
		for _, n := range b.nics {
			b.wg.Add(1)
			go b.eventLoop(n)
		}
	} else {
		b.wg.Add(1)
		go b.pollLoop()
	}
	for _, n := range b.nics {
		b.wg.Add(1)
		go b.asyncLoop(n)
	}
	return b, nil
}

func (b *Backend) setupNIC(i int, pc portChoice) (*nic, error) {
	n := &nic{idx: i, name: pc.info.Name, ctx: pc.ctx, dev: pc.dev, port: pc.port, attr: pc.attr, mtu: pc.attr.ActiveMTU}
	if b.s.PathMTU != 0 {
		if m, _ := MTUFromBytes(b.s.PathMTU); m < n.mtu {
			n.mtu = m
		}
	}
	if n.mtu.Bytes() == 0 {
		n.mtu = MTU1024
	}
	var gids []GIDEntry
	for j := 0; j < pc.attr.GIDTableLen && j < 256; j++ {
		e, err := pc.ctx.QueryGID(pc.port, j)
		if err == nil {
			gids = append(gids, e)
		}
	}
	gid, err := SelectGID(gids, n.link(), b.s.gidIndex)
	switch {
	case err != nil && n.link() == LinkEthernet:
		pc.ctx.Close()
		return nil, fmt.Errorf("%w: %s port %d: %v", ErrNotSupported, n.name, n.port, err)
	case err == nil:
		n.gid = gid
	}
	if n.link() == LinkInfiniBand && pc.attr.LID == 0 && n.gid.GID.IsZero() {
		pc.ctx.Close()
		return nil, fmt.Errorf("%w: %s port %d: InfiniBand port without a LID (no subnet manager?)", ErrNotSupported, n.name, n.port)
	}
	if n.pd, err = pc.ctx.AllocPD(); err != nil {
		pc.ctx.Close()
		return nil, err
	}
	if b.s.eventMode {
		if n.ch, err = pc.ctx.CreateCompChannel(); err != nil {
			n.pd.Close()
			pc.ctx.Close()
			return nil, err
		}
	}
	return n, nil
}

func (b *Backend) teardownNICs() {
	for _, n := range b.nics {
		var errs []error
		if n.ch != nil {
			errs = append(errs, n.ch.Close())
		}
		errs = append(errs, n.pd.Close(), n.ctx.Close())
		if err := errors.Join(errs...); err != nil {
			b.log.Warn("rdma: closing a NIC", "device", n.name, "err", err)
		}
	}
	b.nics = nil
}

// Type reports core.BackendRDMA.
func (b *Backend) Type() core.BackendType { return core.BackendRDMA }

// Blob publishes the NICs' addresses (GID, LID, port, MTU, link layer).
func (b *Backend) Blob() []byte { return b.blob }

// NICs returns the devices and ports in use.
func (b *Backend) NICs() []NICInfo {
	out := make([]NICInfo, len(b.nics))
	for i, n := range b.nics {
		out[i] = n.info()
	}
	return out
}

func (b *Backend) addConn(c *conn) {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	old := *b.conns.Load()
	cs := make([]*conn, 0, len(old)+1)
	cs = append(cs, old...)
	cs = append(cs, c)
	b.conns.Store(&cs)
}

func (b *Backend) dropConn(c *conn) {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	old := *b.conns.Load()
	cs := make([]*conn, 0, len(old))
	for _, x := range old {
		if x != c {
			cs = append(cs, x)
		}
	}
	b.conns.Store(&cs)
}

// RegisterMemory registers a region with every NIC and returns the blob
// carrying its rkey and address per NIC. GPU memory is registered by
// dma-buf when the GPU driver exports one, else as a plain address (which
// needs a peer-memory kernel module).
func (b *Backend) RegisterMemory(r *core.Region) (*core.BackendBlob, error) {
	access := AccessLocalWrite | AccessRemoteWrite | AccessRemoteRead
	rm := &regionMRs{}
	fail := func(err error) (*core.BackendBlob, error) {
		for _, mr := range rm.mrs {
			mr.Close()
		}
		return nil, core.Errorf(core.ErrRDMAOp, "rdma: register memory %d (%#x, %d bytes): %w", r.ID, r.Addr, r.Size, err)
	}
	dmabuf, fd, off := false, -1, uint64(0)
	if !r.Host {
		if x, ok := b.env.GPU.(DmabufExporter); ok {
			var err error
			if fd, off, err = x.ExportDmabuf(r.Addr, r.Size, r.Device); err != nil {
				return fail(fmt.Errorf("export GPU %d memory as dma-buf: %w", r.Device, err))
			}
			defer syscall.Close(fd)
			dmabuf = true
		}
	}
	for _, n := range b.nics {
		var mr MR
		var err error
		if dmabuf {
			mr, err = n.pd.RegDmabufMR(off, r.Size, uint64(r.Addr), fd, access)
		} else {
			mr, err = n.pd.RegMR(r.Addr, r.Size, access)
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", n.name, err))
		}
		rm.mrs = append(rm.mrs, mr)
		rm.keys = append(rm.keys, RemoteKey{RKey: mr.RKey(), IOVA: uint64(r.Addr)})
	}
	r.Attachments.Store(b, rm)
	return &core.BackendBlob{Type: core.BackendRDMA, Data: encodeMemoryBlob(rm.keys)}, nil
}

// DeregisterMemory deregisters a region's MRs: once it returns, no NIC
// reads or writes the memory.
func (b *Backend) DeregisterMemory(r *core.Region) {
	v, ok := r.Attachments.LoadAndDelete(b)
	if !ok {
		return
	}
	for _, mr := range v.(*regionMRs).mrs {
		if err := mr.Close(); err != nil {
			b.log.Warn("rdma: deregister memory", "memory", r.ID, "err", err)
		}
	}
}

func regionOf(b *Backend, r *core.Region) *regionMRs {
	if v, ok := r.Attachments.Load(b); ok {
		return v.(*regionMRs)
	}
	return nil
}

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
		n, err := b.nicFor(i, func(l LinkLayer) bool {
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
func (b *Backend) nicFor(i int, ok func(LinkLayer) bool) (*nic, error) {
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

// Close stops the pollers, closes every QP (failing what is in flight),
// deregisters memory and closes the devices.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	peers := b.peers
	targets := b.targets
	b.peers = map[string]*peer{}
	b.targets = map[string]map[uint8]*conn{}
	b.mu.Unlock()
	closed := core.Errorf(core.ErrBadState, "engine closed")
	for _, p := range peers {
		p.close(closed)
	}
	for _, cs := range targets {
		for _, c := range cs {
			c.close(closed)
		}
	}
	close(b.stop)
	b.wg.Wait()
	if b.env.Registry != nil {
		b.env.Registry.Each(b.DeregisterMemory)
	}
	b.teardownNICs()
	return nil
}

func randomPSN() uint32 { return rand.Uint32() & 0xffffff }

// backoff waits d or until the backend stops; it reports whether to go on.
func (b *Backend) backoff(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.stop:
		return false
	}
}
