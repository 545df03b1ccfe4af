package rdma

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// Backend is the RDMA data plane of one engine. It implements
// core.Backend, core.MemoryBackend and core.ControlHandler.
type Backend struct {
	env  core.BackendEnv
	s    *settings
	log  *slog.Logger
	nics []*nic
	blob []byte

	targetMu sync.Mutex // serializes CONNECTs
	adding   sync.Map   // peer key -> *sync.Mutex held while AddPeer connects it
	mu       sync.Mutex
	peers    map[string]*peer               // this engine as initiator
	targets  map[string]map[targetKey]*conn // this engine as target: peer -> its lane and QP index -> conn
	nTargets int
	closed   bool

	fallback *nic // for memory of no known GPU
	homeMu   sync.Mutex
	homes    homes

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

func newBackend(p verbs.Provider, env core.BackendEnv, s *settings) (*Backend, error) {
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
	if len(ports) > MaxNICs {
		for _, p := range ports[MaxNICs:] {
			p.ctx.Close()
		}
		ports = ports[:MaxNICs]
	}
	b := &Backend{
		env:     env,
		s:       s,
		log:     env.Logger.With("backend", "rdma"),
		peers:   make(map[string]*peer),
		targets: make(map[string]map[targetKey]*conn),
		homes:   homes{byGPU: make(map[int]*nic)},
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	b.conns.Store(&[]*conn{})
	var skipped []string
	for _, pc := range ports {
		n, err := b.setupNIC(len(b.nics), pc)
		if err != nil {
			// One unusable port (no GID, no LID) leaves the others.
			skipped = append(skipped, err.Error())
			b.log.Warn("rdma: port left out", "device", pc.info.Name, "port", pc.port, "err", err)
			continue
		}
		b.nics = append(b.nics, n)
	}
	if len(b.nics) == 0 {
		return nil, fmt.Errorf("%w: no usable RDMA port (%s)", verbs.ErrNotSupported, strings.Join(skipped, "; "))
	}
	var why string
	b.fallback, why = b.defaultNIC()
	infos := make([]NICInfo, len(b.nics))
	for i, n := range b.nics {
		infos[i] = n.info()
		a := n.address()
		b.log.Info("rdma nic", "device", n.name, "port", n.port, "link", n.link(), "gid", a.gid.GID, "gid_index", a.gid.Index,
			"gid_type", a.gid.Type, "lid", a.lid, "mtu", n.mtu.Bytes(), "default", n == b.fallback)
	}
	b.log.Info("rdma default nic", "device", b.fallback.name, "why", why)
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
	b.targets = map[string]map[targetKey]*conn{}
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
func (b *Backend) backoff(d time.Duration) bool { return b.backoffUntil(d, nil) }

// backoffUntil waits d, or until the backend stops or gone is closed; it
// reports whether to go on.
func (b *Backend) backoffUntil(d time.Duration, gone <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.stop:
		return false
	case <-gone:
		return false
	}
}
