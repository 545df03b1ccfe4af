package verbs

import (
	"fmt"
	"time"

	"github.com/mori-go/mori-go/core"
)

// ErrNotSupported is wrapped by the errors that mean "no RDMA here":
// libibverbs cannot be loaded, no device exists, or no port is active. The
// engine then falls back to TCP.
var ErrNotSupported = fmt.Errorf("rdma %w", core.ErrNotSupported)

// Provider is the verbs library: the cgo layer over libibverbs (System) or
// the simulator (package sim). Everything above this file uses only these
// interfaces.
type Provider interface {
	// Devices lists the RDMA devices. No device is not an error.
	Devices() ([]DeviceInfo, error)
	// Open opens a device by name.
	Open(name string) (Context, error)
}

// DeviceInfo names one RDMA device.
type DeviceInfo struct {
	Name string
	// PCIAddr is the device's PCI address ("0000:3b:00.0") when known.
	PCIAddr string
}

// Context is an opened device (struct ibv_context).
type Context interface {
	Name() string
	QueryDevice() (DeviceAttr, error)
	QueryPort(port uint8) (PortAttr, error)
	// QueryGID reads one entry of a port's GID table with its type.
	QueryGID(port uint8, index int) (GIDEntry, error)
	AllocPD() (PD, error)
	CreateCompChannel() (CompChannel, error)
	// CreateCQ creates a completion queue of at least cqe entries; ch may
	// be nil (polling only). Its completion events are raised on
	// interrupt vector (0..CompVectors()-1), which spreads event mode's
	// interrupts over cores.
	CreateCQ(cqe int, ch CompChannel, vector int) (CQ, error)
	// CompVectors is the number of completion vectors (num_comp_vectors).
	CompVectors() int
	// WaitAsyncEvent waits up to timeout for an asynchronous event (a QP
	// or CQ gone fatal, a port going down). ok is false on timeout.
	WaitAsyncEvent(timeout time.Duration) (ev AsyncEvent, ok bool, err error)
	Close() error
}

// PD is a protection domain.
type PD interface {
	// RegMR registers host memory (or GPU memory with a peer-memory
	// module); iova is addr.
	RegMR(addr uintptr, length uint64, access Access) (MR, error)
	// RegDmabufMR registers length bytes at offset of a dma-buf (GPU
	// memory exported by its driver), addressed by peers at iova.
	RegDmabufMR(offset, length, iova uint64, fd int, access Access) (MR, error)
	CreateQP(attr QPInitAttr) (QP, error)
	Close() error
}

// MR is a registered memory region.
type MR interface {
	LKey() uint32
	RKey() uint32
	Close() error
}

// CQ is a completion queue.
type CQ interface {
	// Poll moves up to len(wc) completions into wc and returns how many.
	Poll(wc []WorkCompletion) (int, error)
	// ReqNotify arms the CQ: the next completion raises an event on its
	// completion channel.
	ReqNotify(solicitedOnly bool) error
	Close() error
}

// CompChannel delivers completion events of the CQs created with it.
type CompChannel interface {
	// Wait waits up to timeout for an event and returns its CQ (the event
	// is acknowledged). cq is nil on timeout.
	Wait(timeout time.Duration) (cq CQ, err error)
	Close() error
}

// QP is a reliable-connected queue pair.
type QP interface {
	Num() uint32
	// Modify changes the attributes named by mask (ibv_modify_qp).
	Modify(attr *QPAttr, mask QPAttrMask) error
	// State reads the current state (ibv_query_qp).
	State() (QPState, error)
	// PostSend posts wrs as one chain (one doorbell). On failure the error
	// is a *PostError saying which work request was refused; those before
	// it were posted.
	PostSend(wrs []SendWR) error
	PostRecv(wrs []RecvWR) error
	Close() error
}

// PostError is a refused ibv_post_send or ibv_post_recv.
type PostError struct {
	Index int   // first work request not posted
	Errno error // as returned by the provider
}

func (e *PostError) Error() string {
	return fmt.Sprintf("post of work request %d refused: %v", e.Index, e.Errno)
}

func (e *PostError) Unwrap() error { return e.Errno }
