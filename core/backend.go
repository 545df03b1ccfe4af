package core

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core/tlsconf"
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

// BatchSubmitter is implemented by backends that take the transfers of
// one Submit call at once: the TCP backend writes the small frames of a
// batch bound for one stream in one system call rather than one each.
// SubmitBatch has Submit's contract for each transfer.
type BatchSubmitter interface {
	SubmitBatch(ts []*Transfer)
}

// MemoryBackend is implemented by backends that must know registered
// memory (an RDMA backend registers it with the NIC). Register may attach
// a blob to the descriptor the peer will receive.
type MemoryBackend interface {
	RegisterMemory(r *Region) (*BackendBlob, error)
	DeregisterMemory(r *Region)
}

// GPU is what backends need from a GPU driver: checks and copies. The gpu
// package's Driver implements it, and the optional interfaces below; core
// does not import gpu (the types in these signatures are plain or unnamed,
// so that gpu's methods match them exactly).
type GPU interface {
	// CheckDeviceRange returns nil when [ptr, ptr+size) is device memory
	// of device inside one allocation, and an error saying what is wrong
	// otherwise.
	CheckDeviceRange(ptr uintptr, size uint64, device int) error
	// CopyToHost and CopyFromHost are synchronous copies between device
	// memory and (pageable) host memory.
	CopyToHost(dst []byte, src uintptr, device int) error
	CopyFromHost(dst uintptr, src []byte, device int) error
	// ReadStaged copies the device memory of spans (all on device) to the
	// host through a ring of page-locked buffers and calls consume with the
	// bytes, in order, one chunk at a time: while consume works on a chunk
	// (writes it to a socket), the copies of the next chunks are running on
	// their own streams. A chunk is valid only during the call. The first
	// error from consume or the driver ends the call and is returned.
	ReadStaged(device int, spans []DeviceSpan, consume func([]byte) error) error
	// WriteStaged fills the device memory of spans with the bytes produce
	// gives, in order: produce fills a page-locked chunk (it must fill all
	// of it) while the previous chunks are copied to the device. It returns
	// once every byte is on the device, or the first error.
	WriteStaged(device int, spans []DeviceSpan, produce func([]byte) error) error
}

// DeviceSpan is Size bytes of device memory at Addr. It is an alias of an
// unnamed struct type, so that gpu.Span, declared the same way, is the very
// same type.
type DeviceSpan = struct {
	Addr uintptr
	Size uint64
}

// DeviceCopy is one device-to-device copy (an alias, like DeviceSpan; the
// same type as gpu.Copy).
type DeviceCopy = struct {
	Dst, Src uintptr
	Size     uint64
}

// GPUIPC is implemented by GPU drivers that can share device memory
// between processes of one host (CUDA and HIP IPC). The engine uses it for
// transfers between engines on the same node (package ipc).
type GPUIPC interface {
	// IPCExport returns the IPC handle of the allocation that contains ptr
	// and the offset of ptr in it: handles name allocation bases, whatever
	// pointer they are made from.
	IPCExport(ptr uintptr) (handle [IPCHandleSize]byte, offset uint64, err error)
	// IPCMap maps the allocation a handle names on device and returns its
	// base and size in this process. A handle may be mapped only once per
	// process and device at a time: callers share mappings.
	IPCMap(handle [IPCHandleSize]byte, device int) (base uintptr, size uint64, unmap func() error, err error)
	// CopyDeviceBatch runs copies on one stream of device and returns when
	// all are complete.
	CopyDeviceBatch(device int, copies []DeviceCopy) error
}

// DmabufExporter is implemented by GPU drivers that can export device
// memory as a dma-buf, for GPUDirect RDMA without a peer-memory kernel
// module: register it with ibv_reg_dmabuf_mr(pd, offset, size, iova=ptr,
// fd, access). The exported range is [ptr, ptr+size) widened to whole
// pages and offset is where ptr lies in it. The caller owns fd and closes
// it once registered (the MR holds its own reference). An error that wraps
// the driver's "not supported" (gpu.ErrNotSupported) means: fall back to
// ibv_reg_mr on the address, or to staging. gpu.Driver implements it, and
// also ExportDmabuf(ptr, size, device), the same call that checks the
// memory is on device.
type DmabufExporter interface {
	DmabufFD(ptr uintptr, size uint64) (fd int, offset uint64, err error)
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
	// NodeID names this engine's host; Port is its control-plane port;
	// CallTimeout bounds one Call.
	NodeID      string
	Port        uint16
	CallTimeout time.Duration
	Registry    *Registry
	Inbound     *InboundTable
	Secret      []byte
	// Admission lists the engines whose data streams are served and counts
	// refusals; nil admits every engine (backends tested on their own).
	Admission *Admission
	// TLS, when set, wraps every data-plane connection in mutually
	// authenticated TLS 1.3 (tlsconf); nil: plain TCP.
	TLS *tlsconf.Pair
	// GPU is the GPU driver, nil without one. Backends may test it for the
	// optional interfaces GPUIPC and DmabufExporter.
	GPU    GPU
	Logger *slog.Logger
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
	// ElemSize overrides the element size of the local region
	// (RegionOptions.ElemSize) for this transfer: 0 keeps the region's.
	ElemSize int
	// Observer, when set before the transfer is submitted, is told when
	// it ends (an engine counts its totals so: no closure per transfer).
	Observer EndObserver

	remaining atomic.Int64
	once      sync.Once
	endCode   StatusCode
	flight    flightLinks // set by Flights.Add
}

// EndObserver is told of each transfer that ends, once, before its status
// becomes terminal; EndCode and Elapsed are valid then.
type EndObserver interface {
	TransferEnded(t *Transfer)
}

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

// EndCode is the code the transfer ends with; valid in the Observer's
// TransferEnded (which runs before the status becomes terminal).
func (t *Transfer) EndCode() StatusCode { return t.endCode }

// Elapsed is the time since the transfer was recorded in flight (its
// deadline less the timeout: no clock read at submit beyond Flights.Add's),
// zero for a transfer never in flight.
func (t *Transfer) Elapsed() time.Duration {
	f := t.flight.flights
	if f == nil {
		return 0
	}
	return time.Since(t.flight.deadline.Add(-f.timeout))
}

// Done reports whether the transfer has ended.
func (t *Transfer) Done() bool { return t.Status.Code().Terminal() }

func (t *Transfer) finish(code StatusCode, msg string) {
	t.once.Do(func() {
		if code.Failed() {
			msg = fmt.Sprintf("%s uid %d to %q: %s", t.Op, t.UID, t.Peer, msg)
		}
		if f := t.flight.flights; f != nil {
			f.remove(t)
		}
		t.endCode = code
		if t.Observer != nil {
			t.Observer.TransferEnded(t)
		}
		t.Status.Finish(code, msg)
	})
}

// Deadline helpers shared by backends.

// DefaultTransferTimeout bounds a transfer when the engine sets none.
const DefaultTransferTimeout = 60 * time.Second
