package core

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is a data plane: it moves the bytes of transfers to and from
// peers and serves the peers' transfers into local memory.
//
// An engine calls AddPeer when the application registers a remote engine,
// so that connections (TCP streams, RDMA queue pairs) exist before the first
// transfer; Submit for each transfer; RemovePeer and Close on the way out.
type Backend interface {
	Type() BackendType
	// Blob is what this backend publishes in the local EngineDesc (its data
	// port, its queue pair handshake data).
	Blob() []byte
	// AddPeer prepares connections to a peer from its descriptor.
	AddPeer(desc EngineDesc) error
	// RemovePeer drops a peer; its transfers in flight fail.
	RemovePeer(key string)
	// Submit starts a transfer. It must not block for long, and must end
	// the transfer exactly once, through t.Fail or its parts, whatever
	// happens.
	Submit(t *Transfer)
	Close() error
}

// MemoryBackend is implemented by backends that must know registered
// memory (an RDMA backend registers it with the NIC). Register may attach
// a blob to the descriptor the peer will receive.
type MemoryBackend interface {
	RegisterMemory(r *Region) (*BackendBlob, error)
	DeregisterMemory(r *Region)
}

// GPU is what backends need from a GPU driver: checks and copies. The gpu
// package's Driver implements it.
type GPU interface {
	CheckDeviceRange(ptr uintptr, size uint64, device int) error
	CopyToHost(dst []byte, src uintptr, device int) error
	CopyFromHost(dst uintptr, src []byte, device int) error
}

// ControlHandler is implemented by backends that exchange set-up messages
// with their peers over the control plane (an RDMA backend trades queue
// pair numbers). HandleControl answers one message from engine from.
type ControlHandler interface {
	HandleControl(from string, body []byte) ([]byte, error)
}

// BackendEnv is what an engine hands its backends.
type BackendEnv struct {
	// Call sends body to the same backend of the remote engine over the
	// control plane and returns its answer (see ControlHandler).
	Call     func(peer EngineDesc, body []byte) ([]byte, error)
	LocalKey string
	Host     string // interface to listen on
	Registry *Registry
	Inbound  *InboundTable
	Secret   []byte
	GPU      GPU // nil without a GPU driver
	Logger   *slog.Logger
}

// Transfer is one transfer as backends see it: one local region, one
// remote memory, a list of ranges and a status. Backends split it into
// parts, call Begin with their number, then PartDone or Fail for each.
type Transfer struct {
	Op       Op
	UID      uint64
	Instance uint64 // unique per engine, to tell reuses of a uid apart
	Peer     string
	Local    *Region
	Remote   MemoryDesc
	Ranges   []Range
	Status   *Status
	Bytes    uint64

	remaining atomic.Int64
	once      sync.Once
	onDone    []func()
}

// OnDone registers f to run once the transfer ends, before its status
// becomes terminal. Not safe once the transfer has been submitted.
func (t *Transfer) OnDone(f func()) { t.onDone = append(t.onDone, f) }

// Begin records that the transfer was split into n parts.
func (t *Transfer) Begin(n int) {
	t.remaining.Store(int64(n))
	t.Status.Start()
	if n == 0 {
		t.finish(StatusSuccess, "")
	}
}

// PartDone records one part as done; the last one ends the transfer.
func (t *Transfer) PartDone() {
	if t.remaining.Add(-1) == 0 {
		t.finish(StatusSuccess, "")
	}
}

// Fail ends the transfer with an error. Later calls change nothing.
func (t *Transfer) Fail(code StatusCode, format string, args ...any) {
	t.finish(code, fmt.Sprintf(format, args...))
}

// FailErr ends the transfer with err's code and message.
func (t *Transfer) FailErr(err error) { t.finish(CodeOf(err), err.Error()) }

// Done reports whether the transfer has ended.
func (t *Transfer) Done() bool { return t.Status.Code().Terminal() }

func (t *Transfer) finish(code StatusCode, msg string) {
	t.once.Do(func() {
		if code.Failed() {
			msg = fmt.Sprintf("%s uid %d to %q: %s", t.Op, t.UID, t.Peer, msg)
		}
		for _, f := range t.onDone {
			f()
		}
		t.Status.Finish(code, msg)
	})
}

// Deadline helpers shared by backends.

// DefaultTransferTimeout bounds a transfer when the engine sets none.
const DefaultTransferTimeout = 60 * time.Second
