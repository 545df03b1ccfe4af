package tcp

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
)

// Config tunes the TCP data plane. Zero fields take the defaults, which
// suit both loopback and 100 Gb/s links.
type Config struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Streams is the number of TCP connections to each peer (default 4).
	Streams int
	// ChunkSize is the most payload bytes in one frame (default 1 MiB):
	// larger ranges are split, smaller ones coalesced.
	ChunkSize int
	// MaxEntries is the most ranges in one frame (default 4096).
	MaxEntries int
	// CopyBelow: ranges up to this size are copied into the frame buffer
	// rather than sent as their own iovec (default 512 B: larger ones cost
	// less as an iovec of the writev than as a copy).
	CopyBelow int
	// InlineBelow: a frame of host memory up to this size, submitted to an
	// idle stream, is written by the submitting goroutine rather than
	// handed to the stream's writer (default 512 KiB; negative disables).
	// The write never waits for the socket: what it does not take goes to
	// the writer (inline.go).
	InlineBelow int
	// BusyPoll is how long a thread waiting for its transfers polls the
	// socket for their acknowledgement before sleeping (default 50 µs;
	// negative: never). It saves the wake-ups of halted cores that dominate
	// a small transfer on an otherwise idle machine, for at most that much
	// CPU per wait (busypoll.go).
	BusyPoll time.Duration
	// Window is the most bytes in flight on one stream (default 8 MiB).
	Window int
	// DialTimeout bounds connecting and the handshake (default 5 s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds the handshake on the target (default 5 s).
	HandshakeTimeout time.Duration
	// StallTimeout cuts off a stream that makes no progress while a frame
	// is under way (default 30 s).
	StallTimeout time.Duration
	// ReadBuffer is the target's read buffer per stream (default 64 KiB).
	ReadBuffer int
	// MaxConns bounds the target's inbound streams (default 4096).
	MaxConns int
	// Congestion is the TCP congestion control of the streams the engine
	// opens and accepts ("cubic", "reno", "bbr", ... as the kernel has
	// them; TCP_CONGESTION); empty: the system's
	// (net.ipv4.tcp_congestion_control). Where the system's is bbr, its
	// pacing holds loopback and fast links well below their speed
	// (congestion.go): cubic is the usual choice in a data center. A name
	// the kernel lacks or does not allow the process fails New.
	Congestion string
	// Compression of write payloads to peers that offer it: "off" (the
	// default), "s2", "zstd" or "auto" (compress while it pays); a target
	// not "off" offers to decode them (transport/compress).
	Compression string
	// CompressElemSize, when 2 or more, byte-plane shuffles compressed
	// payloads for elements of this size (2 for bf16/fp16 K/V).
	CompressElemSize int
	// MaxStreamsPerPeer bounds the streams one initiator engine may hold
	// open to the target (default 64).
	MaxStreamsPerPeer int
	// MaxPendingPerHost bounds the connections from one IP address that
	// have not completed the handshake yet (default 64).
	MaxPendingPerHost int
}

func (c *Config) fill() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Streams, 4)
	def(&c.ChunkSize, 1<<20)
	def(&c.MaxEntries, 4096)
	def(&c.CopyBelow, 512)
	def(&c.Window, 8<<20)
	if c.InlineBelow == 0 {
		c.InlineBelow = 512 << 10
	}
	def(&c.ReadBuffer, 64<<10)
	if c.BusyPoll == 0 {
		c.BusyPoll = defaultBusyPoll
	}
	def(&c.MaxConns, 4096)
	def(&c.MaxStreamsPerPeer, 64)
	def(&c.MaxPendingPerHost, 64)
	defd(&c.DialTimeout, 5*time.Second)
	defd(&c.HandshakeTimeout, 5*time.Second)
	defd(&c.StallTimeout, 30*time.Second)
	c.ChunkSize = min(c.ChunkSize, maxPayload)
	c.MaxEntries = min(c.MaxEntries, maxEntries)
	c.Window = max(c.Window, c.ChunkSize)
}

// Backend is the TCP data plane of one engine.
type Backend struct {
	cfg  Config
	env  core.BackendEnv
	srv  *server
	comp *compression // nil when compression is off

	// byWaiters counts the responses read by waiting threads (drive.go).
	byWaiters atomic.Uint64

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool
}

var _ core.Backend = (*Backend)(nil)

// Factory returns a constructor of TCP backends configured with c, of the
// shape an engine takes (engine.Factory). A Config or *Config given at
// creation replaces c; nil keeps it.
func Factory(c Config) func(core.BackendEnv, any) (core.Backend, error) {
	return func(env core.BackendEnv, cfg any) (core.Backend, error) {
		switch v := cfg.(type) {
		case nil:
		case Config:
			c = v
		case *Config:
			c = *v
		default:
			return nil, core.Errorf(core.ErrInvalidArgs, "TCP backend: configuration of type %T, want tcp.Config", cfg)
		}
		return New(c, env)
	}
}

// New starts the data plane: it listens at once on env.Host.
func New(cfg Config, env core.BackendEnv) (*Backend, error) {
	cfg.fill()
	if err := checkCongestion(cfg.Congestion); err != nil {
		return nil, err
	}
	comp, err := newCompression(&cfg)
	if err != nil {
		return nil, err
	}
	srv, err := newServer(&cfg, env, comp)
	if err != nil {
		comp.close()
		return nil, err
	}
	return &Backend{cfg: cfg, env: env, srv: srv, comp: comp, peers: make(map[string]*peer)}, nil
}

// ResponsesReadByWaiters is the number of responses that threads waiting
// for their transfers read from the socket themselves (drive.go), for
// stats().
func (b *Backend) ResponsesReadByWaiters() uint64 { return b.byWaiters.Load() }

// Type reports core.BackendTCP.
func (b *Backend) Type() core.BackendType { return core.BackendTCP }

// Port returns the data port the backend listens on.
func (b *Backend) Port() uint16 { return b.srv.port() }

// Blob publishes the data port: u16, little-endian.
func (b *Backend) Blob() []byte { return binary.LittleEndian.AppendUint16(nil, b.srv.port()) }

// Config returns the configuration in force, defaults filled in.
func (b *Backend) Config() Config { return b.cfg }

// AddPeer connects Streams streams to the peer, replacing an earlier
// registration of the same key.
func (b *Backend) AddPeer(desc core.EngineDesc) error {
	blob := desc.Blob(core.BackendTCP)
	if len(blob) != 2 {
		return core.Errorf(core.ErrInvalidArgs, "engine %q publishes no TCP data port", desc.Key)
	}
	addr := fmt.Sprintf("%s:%d", desc.Host, binary.LittleEndian.Uint16(blob))
	if desc.Host == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", binary.LittleEndian.Uint16(blob))
	}
	p := newPeer(b, desc.Key, addr)
	if err := p.connectAll(); err != nil {
		p.close(err)
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		p.close(core.Errorf(core.ErrBadState, "engine closed"))
		return core.Errorf(core.ErrBadState, "tcp backend closed")
	}
	old := b.peers[desc.Key]
	b.peers[desc.Key] = p
	b.mu.Unlock()
	if old != nil {
		old.close(core.Errorf(core.ErrConnection, "peer %q registered again", desc.Key))
	}
	b.env.Logger.Debug("tcp backend: peer connected", "peer", desc.Key, "addr", addr, "streams", b.cfg.Streams)
	return nil
}

// RemovePeer closes the streams to a peer; its transfers in flight fail.
func (b *Backend) RemovePeer(key string) {
	b.mu.Lock()
	p := b.peers[key]
	delete(b.peers, key)
	b.mu.Unlock()
	if p != nil {
		p.close(core.Errorf(core.ErrConnection, "remote engine %q was deregistered", key))
	}
}

// Submit cuts the transfer into frames and queues them on the peer's streams.
func (b *Backend) Submit(t *core.Transfer) { b.submit(t, nil) }

// SubmitBatch submits each transfer as Submit does, and writes the small
// frames the batch queued on an idle stream in one system call at its end
// (core.BatchSubmitter).
func (b *Backend) SubmitBatch(ts []*core.Transfer) {
	var sb streamBatch
	for _, t := range ts {
		b.submit(t, &sb)
	}
	sb.flush()
}

func (b *Backend) submit(t *core.Transfer, sb *streamBatch) {
	b.mu.Lock()
	p := b.peers[t.Peer]
	b.mu.Unlock()
	if p == nil {
		t.Fail(core.ErrNotFound, "remote engine %q is not registered with the TCP backend", t.Peer)
		return
	}
	if !t.Local.Host && b.env.GPU == nil {
		t.Fail(core.ErrGPUOp, "local memory %d is GPU memory and no GPU driver is loaded", t.Local.ID)
		return
	}
	p.submit(t, sb)
}

// Close stops the listener, closes every stream and fails what is in flight.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	peers := b.peers
	b.peers = map[string]*peer{}
	b.mu.Unlock()
	for _, p := range peers {
		p.close(core.Errorf(core.ErrBadState, "engine closed"))
	}
	b.srv.close()
	b.comp.close()
	return nil
}

// Streams returns the number of streams per peer.
func (b *Backend) Streams() int { return b.cfg.Streams }
