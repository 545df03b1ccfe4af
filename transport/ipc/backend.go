// Package ipc is the same-host GPU path: a transfer between GPU memory of
// two engines on one node (equal EngineDesc.NodeID) is a device-to-device
// copy through a CUDA or HIP IPC mapping of the remote memory, instead of a
// trip through the network stack.
//
// Every GPU registration is exported: its memory descriptor carries a
// core.BackendXGMI blob with the IPC handle of the allocation that holds it
// and the registered pointer's offset in that allocation. An initiator
// whose transfer names such a memory of a same-node peer asks the peer
// (OPEN, over the control plane) whether the memory is still registered and
// is what the descriptor says, maps the allocation once (one mapping per
// handle and local device, shared by every memory inside it and cached
// until the peer or the memory goes away), and copies with
// CopyDeviceBatch on its own device. The exporter remembers who opened
// what; when it deregisters the memory (or closes) it tells each of them
// (CLOSE) and waits until they have finished their copies and unmapped, so
// that once DeregisterMemory returns nothing touches the memory.
//
// The engine asks Reaches, per transfer, whether a transfer goes this way
// or over the data plane (TCP or RDMA); the first transfer to a remote
// memory opens it there. Where the path cannot be used (the driver refuses
// the handle: the peer is in this very process, or the memory comes from
// an allocator whose memory cannot be shared with legacy IPC), Reaches
// says no; that is decided once per remote memory and logged. Copies run
// on a few worker goroutines (Options.Workers), not one per transfer.
//
// The target of a transfer on this path takes no part in it: as with
// MORI-IO's XGMI backend, it records no inbound status
// (PopInboundTransferStatus finds nothing).
package ipc

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
)

// Options configure a Backend.
type Options struct {
	// NodeID of this engine: peers with the same (non-empty) NodeID are on
	// this host.
	NodeID string
	// Host and Port of this engine's control plane, where exporters send
	// CLOSE.
	Host string
	Port uint16
	// Workers is the number of goroutines that run copies (default 8).
	Workers int
	// Timeout bounds each control-plane call (default 10 s).
	Timeout time.Duration
}

// jobQueue is how many transfers wait for a copy worker before Submit
// waits too.
const jobQueue = 1024

// closeTimeout bounds the CLOSE calls of Close: an engine on its way out
// does not wait long for importers that are gone.
const closeTimeout = time.Second

// errUnmappable says that the driver cannot map a remote memory: its
// transfers take the data plane.
var errUnmappable = errors.New("ipc: the driver cannot map this memory")

// Backend is the same-host path of one engine. It is a core.Backend, a
// core.MemoryBackend (it exports GPU registrations) and a
// core.ControlHandler (OPEN and CLOSE).
type Backend struct {
	env  core.BackendEnv
	gpu  core.GPUIPC
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	peers    map[string]core.EngineDesc // same-node peers
	mems     map[memKey]*mapping        // remote memories opened or being opened
	fellBack map[memKey]string          // remote memories this path cannot map, by identity
	closed   bool

	exports core.AttachmentKey[*export] // this backend's state in exported regions

	held map[*handle]int // the IPC mappings this backend uses, with its references; guarded by mappings

	// jobs are the transfers waiting for a copy worker. Submit sends
	// under submitMu's read lock; Close closes it under the write lock.
	submitMu sync.RWMutex
	stopped  bool
	jobs     chan *core.Transfer
	workers  sync.WaitGroup

	transfers, bytes, fallbacks atomic.Uint64
}

var (
	_ core.Backend        = (*Backend)(nil)
	_ core.MemoryBackend  = (*Backend)(nil)
	_ core.ControlHandler = (*Backend)(nil)
)

// New returns the same-host path. env.GPU must implement core.GPUIPC.
func New(env core.BackendEnv, opts Options) (*Backend, error) {
	g, ok := env.GPU.(core.GPUIPC)
	if !ok || env.GPU == nil {
		return nil, core.Errorf(core.ErrGPUOp, "same-host GPU path: the GPU driver cannot share memory between processes")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if env.Call == nil {
		env.Call = func(peer core.EngineDesc, _ []byte) ([]byte, error) {
			return nil, core.Errorf(core.ErrBadState, "same-host path: no control plane to reach %q", peer.Key)
		}
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{
		env: env, gpu: g, opts: opts, log: log,
		peers:    make(map[string]core.EngineDesc),
		mems:     make(map[memKey]*mapping),
		fellBack: make(map[memKey]string),
		held:     make(map[*handle]int),
		jobs:     make(chan *core.Transfer, jobQueue),
	}
	b.exports = core.NewAttachmentKey[*export](b)
	for range opts.Workers {
		b.workers.Add(1)
		go b.work()
	}
	return b, nil
}

// Type reports core.BackendXGMI, MORI-IO's type for its same-host GPU path.
func (b *Backend) Type() core.BackendType { return core.BackendXGMI }

// Blob returns nil: the path publishes nothing in the engine descriptor;
// memory descriptors carry what it needs.
func (b *Backend) Blob() []byte { return nil }

// AddPeer records a peer on this node; peers elsewhere are ignored. A peer
// registered again as a different process loses its old mappings.
func (b *Backend) AddPeer(desc core.EngineDesc) error {
	same := desc.NodeID != "" && desc.NodeID == b.opts.NodeID && desc.Key != b.env.LocalKey
	b.mu.Lock()
	old, had := b.peers[desc.Key]
	if same {
		b.peers[desc.Key] = desc
	} else {
		delete(b.peers, desc.Key)
	}
	b.mu.Unlock()
	if had && (!same || old.PID != desc.PID || old.Hostname != desc.Hostname || old.Host != desc.Host || old.Port != desc.Port) {
		b.dropPeer(desc.Key)
	}
	if same {
		b.log.Debug("same-host GPU path: peer on this node", "peer", desc.Key, "node", desc.NodeID)
	}
	return nil
}

// RemovePeer forgets a peer and unmaps its memories, once the copies in
// flight on them have ended.
func (b *Backend) RemovePeer(key string) {
	b.mu.Lock()
	delete(b.peers, key)
	b.mu.Unlock()
	b.dropPeer(key)
}

// dropPeer closes the mappings of a peer's memories.
func (b *Backend) dropPeer(key string) {
	b.closeMappings(func(k memKey) bool { return k.peer == key })
	b.mu.Lock()
	for k := range b.fellBack {
		if k.peer == key {
			delete(b.fellBack, k)
		}
	}
	b.mu.Unlock()
}

// closeMappings removes the mappings whose key matches and closes them.
func (b *Backend) closeMappings(match func(memKey) bool) {
	b.mu.Lock()
	var ms []*mapping
	for k, m := range b.mems {
		if match(k) {
			ms = append(ms, m)
			delete(b.mems, k)
		}
	}
	b.mu.Unlock()
	for _, m := range ms {
		b.closeMapping(m)
	}
}

// Reaches reports whether t goes this way: local GPU memory the driver
// manages, remote GPU memory that was exported, a peer on this node, and a
// mapping of the remote memory. The first transfer to a remote memory
// opens its mapping (an OPEN call to the peer, then the IPC mapping), once
// per memory; a memory the driver cannot map is remembered and reported
// false, so that its transfers take the data plane. An error (the peer
// refused: the memory was deregistered or is not what the descriptor
// says) fails the transfer.
func (b *Backend) Reaches(t *core.Transfer) (bool, error) {
	if t.Local == nil || t.Local.Host || t.Remote.Location != core.LocationGPU || t.Remote.Blob(core.BackendXGMI) == nil {
		return false, nil
	}
	b.mu.Lock()
	_, ok := b.peers[t.Peer]
	closed := b.closed
	b.mu.Unlock()
	if !ok || closed {
		return false, nil
	}
	m, err := b.acquire(t)
	switch {
	case errors.Is(err, errUnmappable):
		b.fallbacks.Add(1)
		return false, nil
	case err != nil:
		return false, err
	}
	b.release(m)
	return true, nil
}

// Submit queues t, which Reaches accepted, for a copy worker.
func (b *Backend) Submit(t *core.Transfer) {
	b.submitMu.RLock()
	defer b.submitMu.RUnlock()
	if b.stopped {
		t.Fail(core.ErrBadState, "engine %q is closed", b.env.LocalKey)
		return
	}
	b.jobs <- t
}

// work runs queued copies until Close.
func (b *Backend) work() {
	defer b.workers.Done()
	for t := range b.jobs {
		b.copy(t)
	}
}

// copy moves t's ranges device to device through its remote memory's
// mapping.
func (b *Backend) copy(t *core.Transfer) {
	if len(t.Ranges) == 0 {
		t.Begin(0)
		return
	}
	m, err := b.acquire(t)
	if errors.Is(err, errUnmappable) { // the mapping went away since Reaches and cannot come back
		t.Fail(core.ErrBadState, "memory %d of %q can no longer be reached on the same-host path", t.Remote.ID, t.Peer)
		return
	}
	if err != nil {
		t.FailErr(err)
		return
	}
	defer b.release(m)
	if err := t.Local.Use(); err != nil {
		t.FailErr(err)
		return
	}
	defer t.Local.Release()
	t.Begin(1)
	if t.Done() { // timed out while queued
		return
	}
	copies := make([]core.DeviceCopy, len(t.Ranges))
	for i, r := range t.Ranges {
		local, remote := t.Local.Addr+uintptr(r.LocalOffset), m.ptr+uintptr(r.RemoteOffset)
		if t.Op == core.OpWrite {
			copies[i] = core.DeviceCopy{Dst: remote, Src: local, Size: r.Size}
		} else {
			copies[i] = core.DeviceCopy{Dst: local, Src: remote, Size: r.Size}
		}
	}
	if err := b.gpu.CopyDeviceBatch(t.Local.Device, copies); err != nil {
		t.Fail(core.ErrGPUOp, "same-host copy between GPU %d memory %d and memory %d of %q: %v", t.Local.Device, t.Local.ID, t.Remote.ID, t.Peer, err)
		return
	}
	b.transfers.Add(1)
	b.bytes.Add(t.Bytes)
	t.PartDone()
}

// Close unmaps every remote memory once its copies have ended and tells
// the engines that mapped this engine's memory that it is gone (waiting a
// short while for each).
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.submitMu.Lock()
	b.stopped = true
	close(b.jobs)
	b.submitMu.Unlock()
	b.workers.Wait() // the queued transfers fail: the path is closed
	b.closeMappings(func(memKey) bool { return true })
	if b.env.Registry != nil {
		var wg sync.WaitGroup
		b.env.Registry.Each(func(r *core.Region) {
			if x, ok := b.exports.Detach(r); ok {
				wg.Go(func() { b.closeExport(r.ID, x, closeTimeout) })
			}
		})
		wg.Wait()
	}
	unmapsPending.Wait()
	return nil
}

// Stats are counters of the same-host path.
type Stats struct {
	Transfers uint64 // transfers copied device to device
	Bytes     uint64 // their bytes
	Fallbacks uint64 // transfers sent to the data backend instead
	Mappings  int    // IPC mappings this engine uses now (shared in the process)
}

// Stats returns the path's counters.
func (b *Backend) Stats() Stats {
	mappings.Lock()
	n := len(b.held)
	mappings.Unlock()
	return Stats{Transfers: b.transfers.Load(), Bytes: b.bytes.Load(), Fallbacks: b.fallbacks.Load(), Mappings: n}
}
