// Package engine is the mori-go transfer engine: the object behind MORI-IO's
// IOEngine. It owns the memory registry, the control plane, the inbound
// status table and the data-plane backends, checks every request before a
// backend sees it, and tracks each transfer to its end (success, failure or
// timeout).
package engine

import (
	cryptorand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/control"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/internal/lattrace"
)

// BackendMode says how CreateBackend(RDMA) picks its data plane.
type BackendMode string

const (
	// ModeAuto uses RDMA where a usable device exists, TCP otherwise.
	ModeAuto BackendMode = "auto"
	// ModeTCP always uses TCP.
	ModeTCP BackendMode = "tcp"
	// ModeRDMA requires RDMA and fails without it.
	ModeRDMA BackendMode = "rdma"
)

// Config configures an engine. Only Key is required.
type Config struct {
	Key  string
	Host string // address peers reach this engine at; "" means 127.0.0.1
	Port int    // control-plane port; 0 picks a free one
	// Secret, when set, must be shared by every engine that talks to this
	// one: peers without it cannot connect, write or read.
	Secret []byte
	// TLS names the engine's certificate, key and CA (PEM files): when
	// set, the control plane and the data plane run over TLS 1.3, both
	// ends presenting a certificate of the CA (see docs/security.md).
	TLS tlsconf.Files
	// TransferTimeout bounds every transfer (default 60 s).
	TransferTimeout time.Duration
	// HandshakeTimeout bounds RegisterRemoteEngine's handshake (default 10 s).
	HandshakeTimeout time.Duration
	// InboundCapacity bounds the inbound status table.
	InboundCapacity int
	// Mode is how an RDMA backend request is served (default auto).
	Mode BackendMode
	// Backends builds the data planes, one factory per type: TCP (needed
	// for CreateBackend(TCP) and as the fallback of RDMA) and RDMA (absent:
	// this build has none). The engine imports no data plane; whoever
	// assembles it (package stack) hands them in.
	Backends map[core.BackendType]Factory
	// SameHost builds the same-host GPU path; nil: none.
	SameHost SameHostFactory
	// GPU is the GPU driver; nil means GPU registrations are host memory.
	// It is handed to backends as it is (they test it for core.GPUIPC and
	// core.DmabufExporter).
	GPU core.GPU
	// NodeID names the host: engines with the same NodeID (default: the
	// hostname) move GPU memory between them with device-to-device copies
	// through IPC mappings (Config.SameHost) when the driver supports it.
	NodeID string
	// DisableIPC keeps transfers between engines of one node on the data
	// backend.
	DisableIPC bool
	// TotalsLogInterval, when positive, logs the engine's Totals at info
	// level at this interval whenever they changed (0: never).
	TotalsLogInterval time.Duration
	Logger            *slog.Logger
}

// Request is one element of a batch: ranges between one local and one
// remote memory, under one uid.
type Request struct {
	Local  core.MemoryDesc
	Remote core.MemoryDesc
	Ranges []core.Range
	UID    uint64
	// ElemSize overrides the local memory's element size for the shuffle
	// of compressed writes (core.Transfer.ElemSize): 0 keeps it.
	ElemSize int
}

// Engine is one transfer engine.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	reg      *core.Registry
	inbound  *core.InboundTable
	adm      *core.Admission
	tls      *tlsconf.Pair
	ctl      *control.Server
	client   *control.Client
	notes    *notifications
	descs    descCache
	gpuWarn  sync.Once
	uid      atomic.Uint64
	instance atomic.Uint64
	totals   totalCounters
	stopLogs chan struct{} // closed by Close: ends logTotals

	mu       sync.RWMutex
	desc     core.EngineDesc
	data     core.Backend // the data plane transfers go through
	ipc      SameHost     // the same-host GPU path, nil without one
	backends []core.Backend
	remotes  map[string]*remote
	// rdmaFallback is why RDMA was asked for and TCP serves ("" if not).
	rdmaFallback string
	closed       bool

	// kept are the descriptors of registrations that did not fit the
	// caller's buffer (see RegisterMemoryEncoded).
	keptMu sync.Mutex
	kept   map[regArgs][]byte

	flights *core.Flights // transfers in flight, with their deadlines
}

// New starts an engine: its control plane listens at once.
func New(cfg Config) (*Engine, error) {
	if cfg.Key == "" || len(cfg.Key) > core.MaxKeyLen {
		return nil, core.Errorf(core.ErrInvalidArgs, "engine key of %d bytes, want 1..%d", len(cfg.Key), core.MaxKeyLen)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TransferTimeout <= 0 {
		cfg.TransferTimeout = core.DefaultTransferTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeAuto
	case ModeAuto, ModeTCP, ModeRDMA:
	default:
		return nil, core.Errorf(core.ErrInvalidArgs, "backend mode %q: want auto, tcp or rdma", cfg.Mode)
	}
	e := &Engine{
		cfg:      cfg,
		log:      cfg.Logger.With("engine", cfg.Key),
		reg:      core.NewRegistry(),
		adm:      core.NewAdmission(0),
		inbound:  core.NewInboundTable(cfg.InboundCapacity),
		notes:    newNotifications(4096),
		descs:    newDescCache(descCacheSize),
		remotes:  make(map[string]*remote),
		flights:  core.NewFlights(cfg.TransferTimeout),
		stopLogs: make(chan struct{}),
		kept:     make(map[regArgs][]byte),
	}
	var err error
	if e.tls, err = tlsconf.Load(cfg.TLS); err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "engine %q: %w", cfg.Key, err)
	}
	// Instances tell runs of a uid apart on the target, across restarts of
	// this engine too: a restarted engine's uids start again from 1, and
	// its instances must not repeat those of its previous life.
	var seed [8]byte
	if _, err := cryptorand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("engine %q: seed instance numbers: %w", cfg.Key, err)
	}
	e.instance.Store(binary.LittleEndian.Uint64(seed[:]) >> 1)
	hostname, _ := os.Hostname()
	nodeID := cfg.NodeID
	if nodeID == "" {
		nodeID = hostname
	}
	e.desc = core.EngineDesc{Key: cfg.Key, NodeID: nodeID, Hostname: hostname, Host: cfg.Host, PID: uint32(os.Getpid())}
	if err := e.desc.Validate(); err != nil {
		return nil, err
	}
	ctl, err := control.Listen(cfg.Host, cfg.Port, cfg.Secret, e.tls, (*ctlHandler)(e), e.log)
	if err != nil {
		return nil, fmt.Errorf("engine %q: %w", cfg.Key, err)
	}
	e.ctl = ctl
	e.client = control.NewClient(ctl, cfg.Secret)
	e.desc.Port = uint16(ctl.Port())
	if _, ok := cfg.GPU.(core.GPUIPC); ok && !cfg.DisableIPC && cfg.SameHost != nil {
		b, err := cfg.SameHost(e.env(core.BackendXGMI))
		if err != nil {
			ctl.Close()
			return nil, fmt.Errorf("engine %q: %w", cfg.Key, err)
		}
		e.ipc = b
		e.backends = append(e.backends, b)
	}
	if cfg.TotalsLogInterval > 0 {
		go e.logTotals(cfg.TotalsLogInterval, e.stopLogs)
	}
	e.log.Debug("engine up", "host", cfg.Host, "control_port", ctl.Port(), "node", nodeID, "same_host_gpu_path", e.ipc != nil)
	return e, nil
}

// Key returns the engine key.
func (e *Engine) Key() string { return e.cfg.Key }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.log }

// Desc returns the engine's descriptor, with what its backends publish.
func (e *Engine) Desc() core.EngineDesc {
	e.mu.RLock()
	defer e.mu.RUnlock()
	d := e.desc
	d.Backends = append([]core.BackendBlob(nil), e.desc.Backends...)
	return d
}

// env is what backend t gets. Its control-plane messages carry t in a
// first byte, so that the peer's engine hands them to its backend of the
// same type (see ctlHandler.Backend).
func (e *Engine) env(t core.BackendType) core.BackendEnv {
	return core.BackendEnv{
		LocalKey:    e.cfg.Key,
		Host:        e.cfg.Host,
		NodeID:      e.desc.NodeID,
		Port:        e.desc.Port,
		CallTimeout: e.cfg.HandshakeTimeout,
		Registry:    e.reg,
		Inbound:     e.inbound,
		Admission:   e.adm,
		TLS:         e.tls,
		Secret:      e.cfg.Secret,
		GPU:         e.cfg.GPU,
		Logger:      e.log,
		Call: func(peer core.EngineDesc, body []byte) ([]byte, error) {
			msg := make([]byte, 0, 1+len(body))
			msg = append(append(msg, byte(t)), body...)
			return e.client.Backend(peer.Host, int(peer.Port), e.cfg.Key, msg, e.cfg.HandshakeTimeout)
		},
	}
}

// AllocateTransferUID returns a new transfer uid, unique in this engine.
func (e *Engine) AllocateTransferUID() uint64 { return e.uid.Add(1) }

// AllocateTransferUIDs reserves n consecutive transfer uids, unique in
// this engine, and returns the first (a caller that hands them out itself
// saves a call per transfer).
func (e *Engine) AllocateTransferUIDs(n uint64) uint64 { return e.uid.Add(n) - n + 1 }

// Submit starts one transfer per request and returns their statuses, in
// order. The engine takes ownership of each request's Ranges (it may merge
// neighbours in place): the caller must not use them afterwards. Requests
// that are wrong fail at once with a status saying why; the others proceed
// asynchronously.
func (e *Engine) Submit(op core.Op, reqs []Request) []*core.Status {
	lattrace.Mark(lattrace.Submit)
	out := make([]*core.Status, len(reqs))
	b := newBatch(len(reqs))
	for i := range reqs {
		out[i] = e.submit(op, &reqs[i], b)
	}
	b.submit()
	return out
}

// batch gathers the transfers of one Submit call that go to a data plane
// taking batches (core.BatchSubmitter).
type batch struct {
	data core.Backend
	to   core.BatchSubmitter
	ts   []*core.Transfer
}

// newBatch returns a batch for n requests; nil (no batch) for one.
func newBatch(n int) *batch {
	if n < 2 {
		return nil
	}
	return &batch{}
}

// add takes t for the batch when it goes to the batch's data plane (the
// first one seen, if it takes batches); false: submit it alone.
func (b *batch) add(t *core.Transfer, data core.Backend) bool {
	if b == nil {
		return false
	}
	if b.data == nil {
		bs, ok := data.(core.BatchSubmitter)
		if !ok {
			return false
		}
		b.data, b.to = data, bs
	}
	if b.data != data {
		return false
	}
	b.ts = append(b.ts, t)
	return true
}

// submit hands the gathered transfers to the data plane.
func (b *batch) submit() {
	if b != nil && len(b.ts) > 0 {
		b.to.SubmitBatch(b.ts)
	}
}

// submit starts one transfer: it checks the request, records the
// transfer in flight (which arms its deadline) and routes it.
func (e *Engine) submit(op core.Op, rq *Request, b *batch) *core.Status {
	st := core.NewStatus()
	t := &core.Transfer{Op: op, UID: rq.UID, Peer: rq.Remote.EngineKey, Remote: rq.Remote, Status: st, ElemSize: rq.ElemSize}
	data, peer, err := e.checkRequest(t, rq)
	if err != nil {
		t.FailErr(err)
		return st
	}
	// Everything t carries is set before Flights.Add publishes it: from
	// then on its deadline may end it, on the timer's goroutine, at any
	// moment (the race detector once caught the engine adding an end
	// hook while a timed-out transfer ran its end hooks).
	t.Instance = e.instance.Add(1)
	t.Observer = &e.totals
	if err := e.flights.Add(t); err != nil {
		t.FailErr(err) // a duplicate uid in flight: counted as failed
		return st
	}
	if peer.isConnected() { // the common case: no closure
		if !t.Done() {
			e.route(t, data, b)
		}
		return st
	}
	e.whenConnected(peer, func(err error) {
		switch {
		case err != nil:
			t.FailErr(err)
		case !t.Done(): // a transfer that timed out waiting for the connection stays failed
			e.route(t, data, nil)
		}
	})
	return st
}

// checkRequest checks a request against the engine's state and the local
// registrations, and fills in t's local region, ranges and size. It
// returns the data plane to use and the peer.
func (e *Engine) checkRequest(t *core.Transfer, rq *Request) (core.Backend, *remote, error) {
	e.mu.RLock()
	data, closed := e.data, e.closed
	peer, known := e.remotes[rq.Remote.EngineKey]
	e.mu.RUnlock()
	switch {
	case closed:
		return nil, nil, core.Errorf(core.ErrBadState, "engine %q is closed", e.cfg.Key)
	case data == nil:
		return nil, nil, core.Errorf(core.ErrBadState, "no available backend found, create backend first")
	case t.Op != core.OpRead && t.Op != core.OpWrite:
		return nil, nil, core.Errorf(core.ErrInvalidArgs, "unknown operation %d", t.Op)
	case rq.ElemSize < 0 || rq.ElemSize > core.MaxElemSize:
		return nil, nil, core.Errorf(core.ErrInvalidArgs, "element size %d: want 0 (the local memory's), 1 (no shuffle) up to %d", rq.ElemSize, core.MaxElemSize)
	case !known:
		return nil, nil, core.Errorf(core.ErrNotFound, "remote engine %q is not registered", rq.Remote.EngineKey)
	case rq.Local.EngineKey != e.cfg.Key:
		return nil, nil, core.Errorf(core.ErrInvalidArgs, "local memory %d belongs to engine %q, not this engine %q", rq.Local.ID, rq.Local.EngineKey, e.cfg.Key)
	}
	r, err := e.reg.Get(rq.Local.ID)
	if err != nil {
		return nil, nil, err
	}
	if uint64(r.Addr) != rq.Local.Addr || r.Size != rq.Local.Size {
		return nil, nil, core.Errorf(core.ErrNotFound, "local memory %d: descriptor (%#x len %d) does not match the registration (%#x len %d)", rq.Local.ID, rq.Local.Addr, rq.Local.Size, r.Addr, r.Size)
	}
	t.Local = r
	if t.Bytes, err = checkRanges(r, rq); err != nil {
		return nil, nil, err
	}
	t.Ranges = core.CoalesceRanges(rq.Ranges, 0)
	return data, peer, nil
}

// checkRanges checks every range against the local region and the remote
// memory's descriptor, and returns their total size.
func checkRanges(r *core.Region, rq *Request) (uint64, error) {
	var total uint64
	for i, rg := range rq.Ranges {
		if err := r.CheckRange(rg.LocalOffset, rg.Size); err != nil {
			return 0, core.Errorf(core.ErrInvalidArgs, "range %d: local %v", i, err)
		}
		if end := rg.RemoteOffset + rg.Size; end < rg.RemoteOffset || end > rq.Remote.Size {
			return 0, core.Errorf(core.ErrInvalidArgs, "range %d: remote offset %d size %d exceeds remote memory %d of %d bytes", i, rg.RemoteOffset, rg.Size, rq.Remote.ID, rq.Remote.Size)
		}
		total += rg.Size
	}
	return total, nil
}

// route is where a transfer's path is decided: the same-host GPU path
// when it reaches the remote memory, the data plane otherwise (through b,
// when the transfer is part of a batch the data plane takes at once).
func (e *Engine) route(t *core.Transfer, data core.Backend, b *batch) {
	if e.ipc != nil {
		sameHost, err := e.ipc.Reaches(t)
		if err != nil {
			t.FailErr(err)
			return
		}
		if sameHost {
			e.ipc.Submit(t)
			return
		}
	}
	lattrace.Mark(lattrace.Checked)
	if !b.add(t, data) {
		data.Submit(t)
	}
}

// PopInboundTransferStatus returns what this engine knows of the transfer
// that engine remote made under uid into or out of its memory. A finished
// entry is removed by the call.
func (e *Engine) PopInboundTransferStatus(remote string, uid uint64) (core.InboundStatus, bool) {
	return e.inbound.Pop(core.InboundKey{Peer: remote, UID: uid})
}

// Inbound exposes the inbound table (for tests and statistics).
func (e *Engine) Inbound() *core.InboundTable { return e.inbound }

// Registry exposes the memory registry (for tests and statistics).
func (e *Engine) Registry() *core.Registry { return e.reg }

// SecurityStats counts what the engine refused to peers.
type SecurityStats struct {
	// DeniedAccesses: accesses naming memory with a wrong token (every
	// data plane; each also dropped its stream or mapping request).
	DeniedAccesses uint64
	// RefusedStreams: data streams and set-up messages from engines not
	// admitted, or over a connection limit, and control-plane connections
	// refused in the TLS handshake or over a limit.
	RefusedStreams uint64
}

// Security returns the engine's refusal counters.
func (e *Engine) Security() SecurityStats {
	return SecurityStats{DeniedAccesses: e.reg.Denied(), RefusedStreams: e.adm.Refused() + e.ctl.Refused()}
}

// InFlight returns the number of transfers not yet ended.
func (e *Engine) InFlight() int {
	return e.flights.Len()
}

// Close stops the engine: transfers in flight fail, connections close.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.stopLogs)
	backends := e.backends
	remotes := make([]*remote, 0, len(e.remotes))
	for _, r := range e.remotes {
		remotes = append(remotes, r)
	}
	e.mu.Unlock()
	for _, r := range remotes { // transfers waiting for a connection
		r.remove(core.Errorf(core.ErrBadState, "engine %q is closed", e.cfg.Key))
	}
	var errs []error
	for _, b := range backends {
		errs = append(errs, b.Close())
	}
	errs = append(errs, e.ctl.Close())
	return errors.Join(errs...)
}
