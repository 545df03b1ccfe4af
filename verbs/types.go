package verbs

import (
	"fmt"
	"net"
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
	// be nil (polling only).
	CreateCQ(cqe int, ch CompChannel) (CQ, error)
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

// DeviceAttr holds the device limits the backend uses.
type DeviceAttr struct {
	PhysPortCnt     uint8
	MaxQPWR         int
	MaxSGE          int
	MaxCQE          int
	MaxQPRdAtom     int
	MaxQPInitRdAtom int
}

// PortState is enum ibv_port_state.
type PortState uint8

const (
	PortNop    PortState = 0
	PortDown   PortState = 1
	PortInit   PortState = 2
	PortArmed  PortState = 3
	PortActive PortState = 4
)

func (s PortState) String() string {
	switch s {
	case PortDown:
		return "DOWN"
	case PortInit:
		return "INIT"
	case PortArmed:
		return "ARMED"
	case PortActive:
		return "ACTIVE"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// LinkLayer is the IBV_LINK_LAYER_* of a port.
type LinkLayer uint8

const (
	LinkUnspecified LinkLayer = 0
	LinkInfiniBand  LinkLayer = 1
	LinkEthernet    LinkLayer = 2
)

func (l LinkLayer) String() string {
	switch l {
	case LinkInfiniBand, LinkUnspecified:
		return "InfiniBand"
	case LinkEthernet:
		return "Ethernet"
	}
	return fmt.Sprintf("link(%d)", uint8(l))
}

// MTU is enum ibv_mtu.
type MTU uint8

const (
	MTU256  MTU = 1
	MTU512  MTU = 2
	MTU1024 MTU = 3
	MTU2048 MTU = 4
	MTU4096 MTU = 5
)

// Bytes returns the MTU in bytes, 0 if invalid.
func (m MTU) Bytes() int {
	if m < MTU256 || m > MTU4096 {
		return 0
	}
	return 128 << m
}

// MTUFromBytes maps 256..4096 to an MTU; ok is false for other values.
func MTUFromBytes(n int) (MTU, bool) {
	for m := MTU256; m <= MTU4096; m++ {
		if m.Bytes() == n {
			return m, true
		}
	}
	return 0, false
}

// PortAttr holds the port attributes the backend uses.
type PortAttr struct {
	State       PortState
	MaxMTU      MTU
	ActiveMTU   MTU
	GIDTableLen int
	MaxMsgSize  uint32
	LID         uint16
	LinkLayer   LinkLayer
	ActiveWidth uint8
	ActiveSpeed uint8
}

// GID is a 16-byte port address.
type GID [16]byte

// IsZero reports an unused GID table entry.
func (g GID) IsZero() bool { return g == GID{} }

func (g GID) String() string { return net.IP(g[:]).String() }

// GIDType is enum ibv_gid_type.
type GIDType uint8

const (
	GIDTypeIB     GIDType = 0
	GIDTypeRoCEv1 GIDType = 1
	GIDTypeRoCEv2 GIDType = 2
)

func (t GIDType) String() string {
	switch t {
	case GIDTypeIB:
		return "IB"
	case GIDTypeRoCEv1:
		return "RoCE v1"
	case GIDTypeRoCEv2:
		return "RoCE v2"
	}
	return fmt.Sprintf("gid-type(%d)", uint8(t))
}

// GIDEntry is one GID table entry.
type GIDEntry struct {
	Index int
	GID   GID
	Type  GIDType
}

// Access is a set of IBV_ACCESS_* flags.
type Access uint32

const (
	AccessLocalWrite        Access = 1
	AccessRemoteWrite       Access = 2
	AccessRemoteRead        Access = 4
	AccessRemoteAtomic      Access = 8
	AccessRelaxedOrdering   Access = 1 << 20
	accessDefaultDataRegion        = AccessLocalWrite | AccessRemoteWrite | AccessRemoteRead
)

// QPState is enum ibv_qp_state.
type QPState uint8

const (
	QPReset QPState = 0
	QPInit  QPState = 1
	QPRTR   QPState = 2
	QPRTS   QPState = 3
	QPSQD   QPState = 4
	QPSQE   QPState = 5
	QPError QPState = 6
)

func (s QPState) String() string {
	switch s {
	case QPReset:
		return "RESET"
	case QPInit:
		return "INIT"
	case QPRTR:
		return "RTR"
	case QPRTS:
		return "RTS"
	case QPSQD:
		return "SQD"
	case QPSQE:
		return "SQE"
	case QPError:
		return "ERR"
	}
	return fmt.Sprintf("qp-state(%d)", uint8(s))
}

// QPAttrMask is a set of IBV_QP_* attribute bits.
type QPAttrMask uint32

const (
	QPAttrState         QPAttrMask = 1 << 0
	QPAttrAccessFlags   QPAttrMask = 1 << 3
	QPAttrPKeyIndex     QPAttrMask = 1 << 4
	QPAttrPort          QPAttrMask = 1 << 5
	QPAttrAV            QPAttrMask = 1 << 7
	QPAttrPathMTU       QPAttrMask = 1 << 8
	QPAttrTimeout       QPAttrMask = 1 << 9
	QPAttrRetryCnt      QPAttrMask = 1 << 10
	QPAttrRNRRetry      QPAttrMask = 1 << 11
	QPAttrRQPSN         QPAttrMask = 1 << 12
	QPAttrMaxQPRdAtomic QPAttrMask = 1 << 13
	QPAttrMinRNRTimer   QPAttrMask = 1 << 15
	QPAttrSQPSN         QPAttrMask = 1 << 16
	QPAttrMaxDestRdAtom QPAttrMask = 1 << 17
	QPAttrDestQPN       QPAttrMask = 1 << 20
	qpMaskInit                     = QPAttrState | QPAttrPKeyIndex | QPAttrPort | QPAttrAccessFlags
	qpMaskRTR                      = QPAttrState | QPAttrAV | QPAttrPathMTU | QPAttrDestQPN | QPAttrRQPSN | QPAttrMaxDestRdAtom | QPAttrMinRNRTimer
	qpMaskRTS                      = QPAttrState | QPAttrTimeout | QPAttrRetryCnt | QPAttrRNRRetry | QPAttrSQPSN | QPAttrMaxQPRdAtomic
)

// AHAttr is the address vector of a connected QP (struct ibv_ah_attr).
type AHAttr struct {
	DLID         uint16
	SL           uint8
	Port         uint8
	IsGlobal     bool
	DGID         GID
	FlowLabel    uint32
	SGIDIndex    uint8
	HopLimit     uint8
	TrafficClass uint8
}

// QPAttr is struct ibv_qp_attr, reduced to what an RC QP needs.
type QPAttr struct {
	State         QPState
	Port          uint8
	PKeyIndex     uint16
	Access        Access
	PathMTU       MTU
	DestQPN       uint32
	RQPSN         uint32
	SQPSN         uint32
	MaxDestRdAtom uint8
	MaxRdAtomic   uint8
	MinRNRTimer   uint8
	Timeout       uint8
	RetryCnt      uint8
	RNRRetry      uint8
	AH            AHAttr
}

// QPInitAttr creates an RC QP.
type QPInitAttr struct {
	SendCQ, RecvCQ CQ
	MaxSendWR      int
	MaxRecvWR      int
	MaxSendSGE     int
	MaxRecvSGE     int
	MaxInlineData  int
}

// Opcode is enum ibv_wr_opcode.
type Opcode uint8

const (
	OpRDMAWrite        Opcode = 0
	OpRDMAWriteWithImm Opcode = 1
	OpSend             Opcode = 2
	OpSendWithImm      Opcode = 3
	OpRDMARead         Opcode = 4
)

func (o Opcode) String() string {
	switch o {
	case OpRDMAWrite:
		return "RDMA_WRITE"
	case OpRDMAWriteWithImm:
		return "RDMA_WRITE_WITH_IMM"
	case OpSend:
		return "SEND"
	case OpSendWithImm:
		return "SEND_WITH_IMM"
	case OpRDMARead:
		return "RDMA_READ"
	}
	return fmt.Sprintf("opcode(%d)", uint8(o))
}

// SendFlags is a set of IBV_SEND_* flags.
type SendFlags uint32

const (
	SendFence     SendFlags = 1
	SendSignaled  SendFlags = 2
	SendSolicited SendFlags = 4
	SendInline    SendFlags = 8
)

// SGE is one scatter/gather element (struct ibv_sge).
type SGE struct {
	Addr   uint64
	Length uint32
	LKey   uint32
}

// MaxSGE is the most SGEs per work request the layers here pass.
const MaxSGE = 4

// SendWR is one send work request. With SendInline the SGEs point at
// memory that is copied at post time and needs no lkey.
type SendWR struct {
	ID         uint64
	Opcode     Opcode
	Flags      SendFlags
	SGL        []SGE
	RemoteAddr uint64
	RKey       uint32
	Imm        uint32 // host order; sent big-endian as verbs requires
}

// RecvWR is one receive work request.
type RecvWR struct {
	ID  uint64
	SGL []SGE
}

// WCStatus is enum ibv_wc_status.
type WCStatus uint32

const (
	WCSuccess        WCStatus = 0
	WCLocLenErr      WCStatus = 1
	WCLocQPOpErr     WCStatus = 2
	WCLocEECOpErr    WCStatus = 3
	WCLocProtErr     WCStatus = 4
	WCWRFlushErr     WCStatus = 5
	WCMWBindErr      WCStatus = 6
	WCBadRespErr     WCStatus = 7
	WCLocAccessErr   WCStatus = 8
	WCRemInvReqErr   WCStatus = 9
	WCRemAccessErr   WCStatus = 10
	WCRemOpErr       WCStatus = 11
	WCRetryExcErr    WCStatus = 12
	WCRNRRetryExcErr WCStatus = 13
	WCLocRDDViolErr  WCStatus = 14
	WCRemInvRdReqErr WCStatus = 15
	WCRemAbortErr    WCStatus = 16
	WCInvEECNErr     WCStatus = 17
	WCInvEECStateErr WCStatus = 18
	WCFatalErr       WCStatus = 19
	WCRespTimeoutErr WCStatus = 20
	WCGeneralErr     WCStatus = 21
)

var wcStatusNames = [...]string{
	"SUCCESS", "LOC_LEN_ERR", "LOC_QP_OP_ERR", "LOC_EEC_OP_ERR", "LOC_PROT_ERR",
	"WR_FLUSH_ERR", "MW_BIND_ERR", "BAD_RESP_ERR", "LOC_ACCESS_ERR", "REM_INV_REQ_ERR",
	"REM_ACCESS_ERR", "REM_OP_ERR", "RETRY_EXC_ERR", "RNR_RETRY_EXC_ERR", "LOC_RDD_VIOL_ERR",
	"REM_INV_RD_REQ_ERR", "REM_ABORT_ERR", "INV_EECN_ERR", "INV_EEC_STATE_ERR", "FATAL_ERR",
	"RESP_TIMEOUT_ERR", "GENERAL_ERR",
}

// String returns the IBV_WC_* name.
func (s WCStatus) String() string {
	if int(s) < len(wcStatusNames) {
		return "IBV_WC_" + wcStatusNames[s]
	}
	return fmt.Sprintf("IBV_WC_STATUS(%d)", uint32(s))
}

// hint explains the usual cause of an error status.
func (s WCStatus) hint() string {
	switch s {
	case WCRetryExcErr:
		return "transport retry counter exceeded: the peer's NIC did not answer (unreachable peer, wrong GID or GID index, lossy fabric without PFC)"
	case WCRNRRetryExcErr:
		return "receiver not ready: the peer posted no receive buffer for the notification"
	case WCRemAccessErr:
		return "the peer refused the access: its memory region was deregistered, the rkey is stale, or the range exceeds the region"
	case WCLocProtErr, WCLocAccessErr:
		return "local memory protection error: the local memory region does not cover the range or was deregistered"
	case WCLocLenErr:
		return "local length error"
	case WCRemInvReqErr:
		return "the peer found the request invalid (length or opcode)"
	case WCRemOpErr:
		return "the peer could not complete the operation"
	case WCWRFlushErr:
		return "flushed: the queue pair had already gone to the error state"
	case WCFatalErr, WCGeneralErr:
		return "the NIC reported a fatal error"
	}
	return ""
}

// WCOpcode is enum ibv_wc_opcode.
type WCOpcode uint32

const (
	WCSend           WCOpcode = 0
	WCRDMAWrite      WCOpcode = 1
	WCRDMARead       WCOpcode = 2
	WCRecv           WCOpcode = 128
	WCRecvRDMAWithIm WCOpcode = 129
)

// WCFlagWithImm is IBV_WC_WITH_IMM.
const WCFlagWithImm = 1 << 1

// WorkCompletion is struct ibv_wc, flattened.
type WorkCompletion struct {
	ID        uint64
	Status    WCStatus
	Opcode    WCOpcode
	VendorErr uint32
	ByteLen   uint32
	Imm       uint32 // host order, valid with WCFlagWithImm
	Flags     uint32
	QPNum     uint32
}

// AsyncEventType is enum ibv_event_type.
type AsyncEventType uint32

const (
	EventCQErr        AsyncEventType = 0
	EventQPFatal      AsyncEventType = 1
	EventQPReqErr     AsyncEventType = 2
	EventQPAccessErr  AsyncEventType = 3
	EventDeviceFatal  AsyncEventType = 8
	EventPortActive   AsyncEventType = 9
	EventPortErr      AsyncEventType = 10
	EventGIDChange    AsyncEventType = 18
	asyncEventTypeMax AsyncEventType = 19
)

func (t AsyncEventType) String() string {
	switch t {
	case EventCQErr:
		return "IBV_EVENT_CQ_ERR"
	case EventQPFatal:
		return "IBV_EVENT_QP_FATAL"
	case EventQPReqErr:
		return "IBV_EVENT_QP_REQ_ERR"
	case EventQPAccessErr:
		return "IBV_EVENT_QP_ACCESS_ERR"
	case EventDeviceFatal:
		return "IBV_EVENT_DEVICE_FATAL"
	case EventPortActive:
		return "IBV_EVENT_PORT_ACTIVE"
	case EventPortErr:
		return "IBV_EVENT_PORT_ERR"
	case EventGIDChange:
		return "IBV_EVENT_GID_CHANGE"
	}
	return fmt.Sprintf("IBV_EVENT(%d)", uint32(t))
}

// AsyncEvent is one asynchronous event. QPNum is set for QP events, CQ for
// CQ events, Port for port events.
type AsyncEvent struct {
	Type  AsyncEventType
	QPNum uint32
	CQ    CQ
	Port  uint8
}
